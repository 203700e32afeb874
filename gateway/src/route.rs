//! Routing: the collection by longest base-path prefix, then the operation by method and path
//! template. Lookups cost a handful of hash probes plus one radix-tree walk, whatever the size
//! of the catalogue.

pub mod normalize;
pub mod template;

use std::collections::HashMap;

use http::Method;

use self::template::{PathTemplate, WILDCARD_PARAM};

/// Router tables compiled from the published collections and operations.
#[derive(Default)]
pub struct Router {
    /// Base path → index of the collection's table.
    base_paths: HashMap<String, usize>,
    tables: Vec<MethodTable>,
}

/// One radix router per method, so that `GET /x/{id}` and `POST /x/*` can coexist and a
/// method mismatch can name the methods that would have matched.
#[derive(Default)]
struct MethodTable {
    by_method: HashMap<Method, matchit::Router<usize>>,
}

/// An operation to register: its index in the collection, methods and template.
pub struct RouteSpec<'a> {
    pub operation: usize,
    pub methods: &'a [Method],
    pub template: &'a PathTemplate,
}

/// Two operations that would match the same requests.
#[derive(Debug, thiserror::Error)]
#[error("{method} {pattern} conflicts with another operation of the collection: {reason}")]
pub struct RouteConflict {
    /// Index of the offending operation within its collection.
    pub operation: usize,
    pub method: Method,
    pub pattern: String,
    pub reason: String,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<'r, 'p> {
    Found(RouteMatch<'r, 'p>),
    /// The path matches operations of this collection, but none accepts the method.
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
}

/// A matched operation and the values captured from the path.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    pub collection: usize,
    pub operation: usize,
    params: Vec<(&'r str, &'p str)>,
    rest: Option<&'p str>,
}

impl<'r, 'p> RouteMatch<'r, 'p> {
    /// The decoded value of a `{param}`.
    pub fn param(&self, name: &str) -> Option<&'p str> {
        self.params
            .iter()
            .find_map(|(k, v)| (*k == name).then_some(*v))
    }

    /// The decoded remainder matched by a trailing wildcard (empty when it matched nothing).
    pub fn rest(&self) -> &'p str {
        self.rest.unwrap_or_default()
    }
}

impl Router {
    /// Adds a collection's routes; returns its table index. On a conflict nothing is added.
    pub fn add_collection<'a>(
        &mut self,
        base_path: &str,
        routes: impl IntoIterator<Item = RouteSpec<'a>>,
    ) -> Result<usize, RouteConflict> {
        let mut table = MethodTable::default();
        for spec in routes {
            for method in spec.methods {
                let router = table.by_method.entry(method.clone()).or_default();
                for pattern in spec.template.router_patterns() {
                    router
                        .insert(pattern.clone(), spec.operation)
                        .map_err(|e| RouteConflict {
                            operation: spec.operation,
                            method: method.clone(),
                            pattern,
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let index = self.tables.len();
        self.tables.push(table);
        self.base_paths.insert(base_path.to_owned(), index);
        Ok(index)
    }

    /// Finds the operation for a canonical path (see [`normalize::normalize`]).
    pub fn lookup<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Lookup<'r, 'p> {
        let Some((collection, remainder)) = self.collection_for(path) else {
            return Lookup::NotFound;
        };
        let table = &self.tables[collection];
        let found = table.at(method, remainder).or_else(|| {
            // A HEAD request may use a GET operation; the upstream answers without a body.
            (*method == Method::HEAD)
                .then(|| table.at(&Method::GET, remainder))
                .flatten()
        });
        if let Some(m) = found {
            let mut params = Vec::with_capacity(m.params.len());
            let mut rest = None;
            for (k, v) in m.params.iter() {
                if k == WILDCARD_PARAM {
                    rest = Some(v);
                } else {
                    params.push((k, v));
                }
            }
            // A wildcard matched by its bare prefix plus `/` keeps that slash upstream.
            let rest = rest.or_else(|| remainder.ends_with('/').then_some("/"));
            return Lookup::Found(RouteMatch {
                collection,
                operation: *m.value,
                params,
                rest,
            });
        }
        let mut allow: Vec<Method> = table
            .by_method
            .iter()
            .filter(|(_, router)| router.at(remainder).is_ok())
            .map(|(m, _)| m.clone())
            .collect();
        if allow.is_empty() {
            return Lookup::NotFound;
        }
        if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
            allow.push(Method::HEAD);
        }
        allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Lookup::MethodNotAllowed { allow }
    }

    /// The collection with the longest base path that is a whole-segment prefix of `path`, and
    /// the rest of the path relative to it (`/` when the path is the base path itself).
    fn collection_for<'p>(&self, path: &'p str) -> Option<(usize, &'p str)> {
        let mut end = path.len();
        loop {
            let prefix = &path[..end];
            if let Some(&index) = self.base_paths.get(prefix) {
                let remainder = &path[end..];
                return Some((index, if remainder.is_empty() { "/" } else { remainder }));
            }
            match prefix.rfind('/') {
                Some(0) | None => break,
                Some(i) => end = i,
            }
        }
        self.base_paths.get("/").map(|&index| (index, path))
    }
}

impl MethodTable {
    fn at<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
    ) -> Option<matchit::Match<'r, 'p, &'r usize>> {
        self.by_method.get(method)?.at(path).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(collections: &[(&str, &[(&str, &str)])]) -> Router {
        let mut r = Router::default();
        for (base, ops) in collections {
            let parsed: Vec<(Vec<Method>, PathTemplate)> = ops
                .iter()
                .map(|(m, t)| {
                    (
                        vec![Method::from_bytes(m.as_bytes()).unwrap()],
                        PathTemplate::parse(t).unwrap(),
                    )
                })
                .collect();
            r.add_collection(
                base,
                parsed.iter().enumerate().map(|(i, (m, t))| RouteSpec {
                    operation: i,
                    methods: m,
                    template: t,
                }),
            )
            .unwrap();
        }
        r
    }

    fn found(r: &Router, method: &str, path: &str) -> Option<(usize, usize)> {
        match r.lookup(&Method::from_bytes(method.as_bytes()).unwrap(), path) {
            Lookup::Found(m) => Some((m.collection, m.operation)),
            Lookup::MethodNotAllowed { .. } | Lookup::NotFound => None,
        }
    }

    #[test]
    fn longest_prefix_then_template() {
        let r = router(&[
            ("/pay", &[("GET", "/a")]),
            ("/pay/v2", &[("GET", "/a"), ("GET", "/b/{id}")]),
            ("/", &[("GET", "/*")]),
        ]);
        assert_eq!(found(&r, "GET", "/pay/a"), Some((0, 0)));
        assert_eq!(found(&r, "GET", "/pay/v2/a"), Some((1, 0)));
        assert_eq!(found(&r, "GET", "/pay/v2/b/7"), Some((1, 1)));
        // Base paths match whole segments only: /payx is not under /pay.
        assert_eq!(found(&r, "GET", "/payx/a"), Some((2, 0)));
        assert_eq!(found(&r, "GET", "/anything"), Some((2, 0)));
        assert_eq!(found(&r, "GET", "/"), Some((2, 0)));
        // /pay/v2 has no /c, and the longest prefix decides: no fallback to the root collection.
        assert_eq!(found(&r, "GET", "/pay/v2/c"), None);
    }

    #[test]
    fn params_and_wildcards() {
        let r = router(&[("/files", &[("GET", "/by-id/{id}"), ("GET", "/tree/*")])]);
        let Lookup::Found(m) = r.lookup(&Method::GET, "/files/by-id/42") else {
            panic!("no match")
        };
        assert_eq!(m.param("id"), Some("42"));
        let Lookup::Found(m) = r.lookup(&Method::GET, "/files/tree/a/b/c") else {
            panic!("no match")
        };
        assert_eq!(m.rest(), "a/b/c");
        for (bare, rest) in [("/files/tree", ""), ("/files/tree/", "/")] {
            let Lookup::Found(m) = r.lookup(&Method::GET, bare) else {
                panic!("no match for {bare}")
            };
            assert_eq!(m.rest(), rest);
        }
        let Lookup::Found(m) = r.lookup(&Method::GET, "/files/tree/a/") else {
            panic!("no match")
        };
        assert_eq!(m.rest(), "a/");
    }

    #[test]
    fn method_mismatch_lists_allowed_methods() {
        let r = router(&[(
            "/x",
            &[
                ("GET", "/items/{id}"),
                ("DELETE", "/items/{id}"),
                ("POST", "/*"),
            ],
        )]);
        assert_eq!(found(&r, "POST", "/x/items/1"), Some((0, 2)));
        assert_eq!(found(&r, "HEAD", "/x/items/1"), Some((0, 0)));
        match r.lookup(&Method::PUT, "/x/items/1") {
            Lookup::MethodNotAllowed { allow } => {
                assert_eq!(allow, ["DELETE", "GET", "HEAD", "POST"])
            }
            other @ (Lookup::Found(_) | Lookup::NotFound) => panic!("{other:?}"),
        }
        assert!(matches!(r.lookup(&Method::GET, "/y"), Lookup::NotFound));
    }

    #[test]
    fn conflicting_templates_are_refused() {
        let t1 = PathTemplate::parse("/items/{id}").unwrap();
        let t2 = PathTemplate::parse("/items/{name}").unwrap();
        let get = [Method::GET];
        let mut r = Router::default();
        let err = r
            .add_collection(
                "/x",
                [
                    RouteSpec {
                        operation: 0,
                        methods: &get,
                        template: &t1,
                    },
                    RouteSpec {
                        operation: 1,
                        methods: &get,
                        template: &t2,
                    },
                ],
            )
            .unwrap_err();
        assert_eq!(err.operation, 1);
    }
}
