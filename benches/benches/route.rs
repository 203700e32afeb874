//! Route lookup cost as the catalogue grows: 10, 10,000 and 100,000 operations. The lookups
//! hit operations spread across the whole catalogue, so a linear scan would show at once.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;
use portcullis::route::normalize::normalize;
use portcullis::route::template::PathTemplate;
use portcullis::route::{Lookup, RouteSpec, Router};

/// A router of `operations` operations, 100 per collection (fewer for tiny catalogues), and
/// request paths that hit operations spread over it.
fn catalogue(operations: usize) -> (Router, Vec<String>) {
    let per_collection = operations.min(100);
    let collections = operations / per_collection;
    let mut router = Router::default();
    let get = [Method::GET];
    for c in 0..collections {
        let templates: Vec<PathTemplate> = (0..per_collection)
            .map(|o| match o % 3 {
                0 => PathTemplate::parse(&format!("/res{o}/{{id}}")),
                1 => PathTemplate::parse(&format!("/res{o}/{{id}}/items/{{item}}")),
                _ => PathTemplate::parse(&format!("/res{o}/*")),
            })
            .collect::<Result<_, _>>()
            .unwrap();
        let specs = templates.iter().enumerate().map(|(i, t)| RouteSpec {
            operation: i,
            methods: &get,
            template: t,
        });
        router.add_collection(&format!("/api/c{c}"), specs).unwrap();
    }
    let paths = (0..64)
        .map(|i| {
            let c = (i * 7919) % collections;
            let o = (i * 31) % per_collection;
            match o % 3 {
                0 => format!("/api/c{c}/res{o}/42"),
                1 => format!("/api/c{c}/res{o}/42/items/7"),
                _ => format!("/api/c{c}/res{o}/a/b/c"),
            }
        })
        .collect();
    (router, paths)
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for size in [10, 10_000, 100_000] {
        let (router, paths) = catalogue(size);
        for p in &paths {
            assert!(
                matches!(router.lookup(&Method::GET, p), Lookup::Found(_)),
                "{p}"
            );
        }
        group.bench_with_input(BenchmarkId::from_parameter(size), &paths, |b, paths| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % paths.len();
                let path = normalize(black_box(&paths[i])).unwrap();
                matches!(router.lookup(&Method::GET, &path), Lookup::Found(_))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route_lookup);
criterion_main!(benches);
