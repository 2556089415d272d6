//! Which log lines are written: `[log] level` from gateway.toml, overridden by `WXGATE_LOG`,
//! applied through a `tracing_subscriber` reload layer so a configuration reload can change it
//! while the gateway runs. The binary installs the layer; [`set_level`] is what a reload calls.

use std::sync::OnceLock;

use tracing_subscriber::reload;
use tracing_subscriber::{EnvFilter, Registry};

/// The environment variable that overrides `[log] level` (and wins over every reload).
pub const ENV: &str = "WXGATE_LOG";

/// The level used before the configuration is read, and when `[log] level` is absent.
pub const DEFAULT: &str = "info";

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `WXGATE_LOG` was set: the operator asked for this filter; the file does not change it.
    from_env: bool,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Parses a filter as `gateway.toml` accepts it: `EnvFilter` directives
/// (`"info"`, `"warn,wxgate=debug"`). A bare word must be a level: `EnvFilter` would read
/// `"verbose"` as "everything from the module `verbose`", which is never what a config meant.
pub fn parse(directives: &str) -> Result<EnvFilter, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if !d.contains(['=', '[']) && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{d:?} is not a level; write one of trace, debug, info, warn, error, off, \
                 or target=level such as \"info,wxgate=debug\""
            ));
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("invalid filter {directives:?}: {e}"))
}

/// The filter layer the binary puts first on its `Registry`: `WXGATE_LOG` when set (an
/// invalid value falls back to [`DEFAULT`]), else [`DEFAULT`] until [`set_level`] applies
/// the file's level. Only the first call registers the handle that [`set_level`] uses.
pub fn layer() -> reload::Layer<EnvFilter, Registry> {
    let env = std::env::var(ENV).ok();
    let filter = env
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT));
    let (layer, handle) = reload::Layer::new(filter);
    let _ = CONTROL.set(Control {
        handle,
        from_env: env.is_some(),
    });
    layer
}

/// What [`set_level`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The new filter is in force for the next log line.
    Changed,
    /// `WXGATE_LOG` is set and wins; nothing changed.
    EnvOverride,
    /// No [`layer`] was installed (library use, tests); nothing changed.
    NotInstalled,
}

/// Applies `[log] level` (start-up and every reload). The value was validated when the file
/// was loaded, so an error here is unexpected; it leaves the previous filter in force.
pub fn set_level(directives: &str) -> Result<Applied, String> {
    let Some(control) = CONTROL.get() else {
        return Ok(Applied::NotInstalled);
    };
    if control.from_env {
        return Ok(Applied::EnvOverride);
    }
    apply(&control.handle, directives)?;
    Ok(Applied::Changed)
}

fn apply(handle: &reload::Handle<EnvFilter, Registry>, directives: &str) -> Result<(), String> {
    let filter = parse(directives)?;
    // `reload` also rebuilds tracing's callsite interest cache, so call sites disabled until
    // now start logging (and the reverse).
    handle.reload(filter).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn parse_accepts_levels_and_targets_and_refuses_the_rest() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,wxgate=debug",
            "wxgate::access=off,info",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for (bad, named) in [
            ("verbose", "\"verbose\" is not a level"),
            ("info,loud", "\"loud\" is not a level"),
            ("wxgate=loud", "invalid filter \"wxgate=loud\""),
            ("info,[{", "invalid filter"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }

    #[test]
    fn a_reload_changes_what_is_logged() {
        let (layer, handle) = reload::Layer::new(EnvFilter::new("warn"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::INFO));
            apply(&handle, "debug").unwrap();
            assert!(tracing::enabled!(tracing::Level::DEBUG));
            assert!(!tracing::enabled!(tracing::Level::TRACE));
            assert!(apply(&handle, "nonsense").is_err());
            assert!(
                tracing::enabled!(tracing::Level::DEBUG),
                "a bad level leaves the old one in force"
            );
            apply(&handle, "error").unwrap();
            assert!(!tracing::enabled!(tracing::Level::WARN));
        });
    }

    #[test]
    fn set_level_without_a_layer_changes_nothing() {
        // The library's tests never call `layer()`, so no handle is registered.
        if CONTROL.get().is_none() {
            assert_eq!(set_level("debug"), Ok(Applied::NotInstalled));
        }
    }
}
