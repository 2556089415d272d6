//! Route selection: a route for the request's host wins over a host-less one, and among
//! those the longest path prefix wins. Prefixes match whole path segments of the normalised
//! path ([`crate::path`]), ASCII-case-insensitively and ignoring `;parameters`, so `/api`
//! serves `/api`, `/API/x` and `/api;p` but not `/apiary`.

use std::sync::Arc;

use crate::config::RouteSettings;

pub struct Router {
    /// Host-specific routes first, then host-less; each group sorted by prefix length, longest first.
    routes: Vec<Arc<RouteSettings>>,
}

impl Router {
    pub fn new(routes: &[RouteSettings]) -> Router {
        let mut routes: Vec<Arc<RouteSettings>> = routes
            .iter()
            .cloned()
            .map(|mut r| {
                // Requests are matched in normal form, so the prefixes are too: a configured
                // `/a//b` or `/%7Eme` would otherwise never match anything.
                if let Ok(p) = crate::path::normalize(&r.path) {
                    r.path = p.into_owned();
                }
                Arc::new(r)
            })
            .collect();
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path.len().cmp(&a.path.len()))
        });
        Router { routes }
    }

    /// `host` is the request's host, lower-case, without port; `path` is normalised
    /// ([`crate::path::normalize`]).
    pub fn select(&self, host: &str, path: &str) -> Option<&Arc<RouteSettings>> {
        self.routes
            .iter()
            .find(|r| r.host.as_deref().is_none_or(|h| h == host) && prefix_matches(&r.path, path))
    }

    pub fn routes(&self) -> &[Arc<RouteSettings>] {
        &self.routes
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    crate::path::is_under(prefix, path)
}

/// The path sent upstream: with a base path in the upstream URL the route prefix is replaced
/// by it (as nginx's `proxy_pass http://up/base/`); without one the path goes unchanged.
pub fn upstream_path(route: &RouteSettings, path: &str) -> String {
    let base = &route.upstream.base_path;
    if base.is_empty() {
        return path.to_string();
    }
    let rest = crate::path::strip_prefix(&route.path, path).unwrap_or(path);
    // `/shop;jsessionid=x` under `/shop` keeps its parameters on the base: `/app;jsessionid=x`.
    if rest.starts_with(';') {
        return format!("{base}{rest}");
    }
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() && !path.ends_with('/') {
        base.clone()
    } else {
        format!("{base}/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::path::Path;

    fn router(routes: &str) -> Router {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{routes}");
        let s = Settings::from_toml(&text, Path::new("t.toml"), Path::new("."), &|_| None).unwrap();
        Router::new(&s.routes)
    }

    #[test]
    fn host_first_then_longest_prefix() {
        let r = router(
            "[[route]]\nname=\"any\"\nupstream=\"http://a\"\n\
             [[route]]\nname=\"api\"\npath=\"/api\"\nupstream=\"http://b\"\n\
             [[route]]\nname=\"shop\"\nhost=\"Shop.Example.com\"\nupstream=\"http://c\"\n\
             [[route]]\nname=\"shopapi\"\nhost=\"shop.example.com\"\npath=\"/api/v2\"\nupstream=\"http://d\"\n",
        );
        let name = |h: &str, p: &str| r.select(h, p).map(|r| r.name.clone());
        assert_eq!(name("other", "/x").as_deref(), Some("any"));
        assert_eq!(name("other", "/api/x").as_deref(), Some("api"));
        assert_eq!(name("other", "/api").as_deref(), Some("api"));
        assert_eq!(name("other", "/apiary").as_deref(), Some("any"));
        assert_eq!(
            name("shop.example.com", "/api/x").as_deref(),
            Some("shop"),
            "host match wins"
        );
        assert_eq!(
            name("shop.example.com", "/api/v2/y").as_deref(),
            Some("shopapi")
        );
    }

    #[test]
    fn no_route() {
        let r = router("[[route]]\nname=\"api\"\npath=\"/api/\"\nupstream=\"http://b\"\n");
        assert!(r.select("h", "/").is_none());
        assert!(r.select("h", "/api").is_none());
        assert!(r.select("h", "/api/").is_some());
    }

    #[test]
    fn base_path_replaces_prefix() {
        let r = router(
            "[[route]]\nname=\"a\"\npath=\"/shop\"\nupstream=\"http://b/app/\"\n\
             [[route]]\nname=\"b\"\npath=\"/plain\"\nupstream=\"http://b\"\n\
             [[route]]\nname=\"c\"\npath=\"/\"\nupstream=\"http://b/root\"\n",
        );
        let a = r.select("h", "/shop/x").unwrap();
        assert_eq!(upstream_path(a, "/shop/x/y"), "/app/x/y");
        assert_eq!(upstream_path(a, "/shop"), "/app");
        assert_eq!(upstream_path(a, "/shop/"), "/app/");
        let b = r.select("h", "/plain/x").unwrap();
        assert_eq!(upstream_path(b, "/plain/x"), "/plain/x");
        let c = r.select("h", "/z").unwrap();
        assert_eq!(upstream_path(c, "/z"), "/root/z");
        assert_eq!(upstream_path(c, "/"), "/root/");
        // Case and parameters: the prefix is matched as the router matched it.
        assert_eq!(upstream_path(a, "/SHOP/x"), "/app/x");
        assert_eq!(upstream_path(a, "/shop;s=1"), "/app;s=1");
        assert_eq!(upstream_path(a, "/shop;s=1/x"), "/app;s=1/x");
    }

    #[test]
    fn case_and_parameters_get_the_prefix_policy() {
        let r = router(
            "[[route]]\nname=\"any\"\nupstream=\"http://a\"\n\
             [[route]]\nname=\"admin\"\npath=\"/admin\"\nupstream=\"http://b\"\n\
             [[route]]\nname=\"deep\"\npath=\"/admin/keys\"\nupstream=\"http://b\"\n\
             [[route]]\nname=\"odd\"\npath=\"/x//%7Eme\"\nupstream=\"http://b\"\n",
        );
        let name = |p: &str| r.select("h", p).map(|r| r.name.clone());
        for p in [
            "/admin",
            "/ADMIN",
            "/Admin/x",
            "/admin;jsessionid=x",
            "/admin;a/x",
        ] {
            assert_eq!(name(p).as_deref(), Some("admin"), "{p}");
        }
        assert_eq!(name("/admin;x/KEYS/1").as_deref(), Some("deep"));
        assert_eq!(name("/adminx").as_deref(), Some("any"));
        assert_eq!(
            name("/x/~me/1").as_deref(),
            Some("odd"),
            "prefixes are normalised"
        );
    }
}
