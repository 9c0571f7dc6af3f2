//! Splitting a closure into layers by popularity, as nixpkgs'
//! `referencesByPopularity` does: the most shared paths get layers of their own.
//!
//! nixpkgs' `closure-graph.py` unrolls the reference graph into a tree below
//! the roots and scores each path: popularity(x) is the sum, over every path
//! y from which x can be reached (x included), of the number of ways down
//! from the roots to y. That is computed here without unrolling, which could
//! be exponential. Ties go by nixpkgs' sort key (the name after the hash,
//! then the hash), so a changed hash moves a path as little as possible.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::nix::PathInfo;

/// At most `max_layers` layers (each a list of store paths), most popular first.
///
/// The first `max_layers - 1` paths by popularity get a layer each, the rest
/// share the last. The walk starts at `roots` and at every path nothing else
/// in the closure refers to (so no path is left out); references to paths
/// outside `closure` are ignored. `max_layers` 0 counts as 1.
pub fn layers_by_popularity(closure: &[PathInfo], roots: &[PathBuf], max_layers: usize) -> Vec<Vec<PathBuf>> {
    let ordered = order_by_popularity(closure, roots);
    let singles = ordered.len().min(max_layers.max(1) - 1);
    let mut layers: Vec<Vec<PathBuf>> = ordered[..singles].iter().map(|path| vec![path.to_path_buf()]).collect();
    if singles < ordered.len() {
        layers.push(ordered[singles..].iter().map(|path| path.to_path_buf()).collect());
    }
    layers
}

/// The paths of `closure`, most popular first.
fn order_by_popularity<'a>(closure: &'a [PathInfo], roots: &[PathBuf]) -> Vec<&'a Path> {
    let graph = Graph::new(closure);
    let popularity = graph.popularity(roots);
    let mut order: Vec<usize> = (0..graph.paths.len()).collect();
    order.sort_by_cached_key(|&node| (std::cmp::Reverse(popularity[node]), sort_key(graph.paths[node])));
    order.into_iter().map(|node| graph.paths[node]).collect()
}

/// The closure as numbered nodes, each path once, without self-references.
struct Graph<'a> {
    paths: Vec<&'a Path>,
    references: Vec<Vec<usize>>,
    /// Per node: how many other nodes refer to it.
    referrers: Vec<usize>,
}

impl<'a> Graph<'a> {
    fn new(closure: &'a [PathInfo]) -> Self {
        let mut paths: Vec<&Path> = closure.iter().map(|info| info.path.as_path()).collect();
        paths.sort();
        paths.dedup();
        let index: HashMap<&Path, usize> = paths.iter().enumerate().map(|(node, path)| (*path, node)).collect();
        let mut references = vec![Vec::new(); paths.len()];
        for info in closure {
            let node = index[info.path.as_path()];
            let targets = info.references.iter().filter_map(|r| index.get(r.as_path()).copied());
            references[node].extend(targets.filter(|&target| target != node));
        }
        let mut referrers = vec![0; paths.len()];
        for targets in &mut references {
            targets.sort_unstable();
            targets.dedup();
            targets.iter().for_each(|&target| referrers[target] += 1);
        }
        Graph { paths, references, referrers }
    }

    /// Per node: the sum of `ways_down` over the node and all that reach it.
    fn popularity(&self, roots: &[PathBuf]) -> Vec<u128> {
        let order = self.topological_order();
        let ways = self.ways_down(roots, &order);
        let mut popularity = vec![0u128; self.paths.len()];
        let mut reached = vec![false; self.paths.len()];
        for (start, &ways_to_start) in ways.iter().enumerate().filter(|(_, &ways)| ways > 0) {
            reached.fill(false);
            let mut stack = vec![start];
            reached[start] = true;
            while let Some(node) = stack.pop() {
                popularity[node] = popularity[node].saturating_add(ways_to_start);
                for &target in &self.references[node] {
                    if !reached[target] {
                        reached[target] = true;
                        stack.push(target);
                    }
                }
            }
        }
        popularity
    }

    /// Per node: in how many ways it is reached going down from the roots (a
    /// root counts once for itself). Saturates rather than overflows: that
    /// takes a graph of more than a hundred levels of diamonds.
    fn ways_down(&self, roots: &[PathBuf], order: &[usize]) -> Vec<u128> {
        let mut ways = vec![0u128; self.paths.len()];
        for (node, path) in self.paths.iter().enumerate() {
            let is_given_root = roots.iter().any(|root| root == path);
            if is_given_root || self.referrers[node] == 0 {
                ways[node] = 1;
            }
        }
        for &node in order {
            for &target in &self.references[node] {
                ways[target] = ways[target].saturating_add(ways[node]);
            }
        }
        ways
    }

    /// Referrers before what they refer to. Store closures have no cycles;
    /// nodes on one (bad input) are left at the end and count only as roots.
    fn topological_order(&self) -> Vec<usize> {
        let mut referrers = self.referrers.clone();
        let mut ready: Vec<usize> = (0..self.paths.len()).filter(|&node| referrers[node] == 0).collect();
        let mut order = Vec::with_capacity(self.paths.len());
        while let Some(node) = ready.pop() {
            order.push(node);
            for &target in &self.references[node] {
                referrers[target] -= 1;
                if referrers[target] == 0 {
                    ready.push(target);
                }
            }
        }
        order
    }
}

/// nixpkgs' `package_name`: `/nix/store/hash-name-1.0` sorts as
/// `name-1.0-/nix/store/hash`.
fn sort_key(path: &Path) -> String {
    let path = path.to_string_lossy();
    match path.split_once('-') {
        Some((hash, name)) => format!("{name}-{hash}"),
        None => path.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closure from `(name, references)`, each name becoming `/nix/store/h-name`.
    fn closure(graph: &[(&str, &[&str])]) -> Vec<PathInfo> {
        let info = |(name, references): &(&str, &[&str])| PathInfo {
            path: store(name),
            nar_size: 1,
            references: references.iter().map(|r| store(r)).collect(),
            ..PathInfo::default()
        };
        graph.iter().map(info).collect()
    }

    fn store(name: &str) -> PathBuf {
        PathBuf::from(format!("/nix/store/h-{name}"))
    }

    fn names(layers: &[Vec<PathBuf>]) -> Vec<Vec<String>> {
        let name = |path: &PathBuf| path.to_string_lossy().trim_start_matches("/nix/store/h-").to_owned();
        layers.iter().map(|layer| layer.iter().map(name).collect()).collect()
    }

    fn layers(graph: &[(&str, &[&str])], roots: &[&str], max_layers: usize) -> Vec<Vec<String>> {
        let roots: Vec<PathBuf> = roots.iter().map(|r| store(r)).collect();
        names(&layers_by_popularity(&closure(graph), &roots, max_layers))
    }

    /// The example in nixpkgs' closure-graph.py: F 9, E 5, D 4, C 3, B 2, G 2, A 1.
    const NIXPKGS_EXAMPLE: &[(&str, &[&str])] = &[
        ("a", &["a", "b", "g"]),
        ("b", &["c", "e"]),
        ("c", &["d", "e"]),
        ("d", &["f"]),
        ("e", &["f"]),
        ("f", &[]),
        ("g", &[]),
    ];

    #[test]
    fn the_nixpkgs_example_orders_as_nixpkgs_does() {
        let expected = [["f"], ["e"], ["d"], ["c"], ["b"], ["g"], ["a"]].map(|l| l.map(String::from).to_vec());
        assert_eq!(layers(NIXPKGS_EXAMPLE, &["a"], 100), expected);
        assert_eq!(layers(NIXPKGS_EXAMPLE, &[], 7), expected);
    }

    #[test]
    fn the_last_layer_takes_the_rest() {
        assert_eq!(layers(NIXPKGS_EXAMPLE, &["a"], 3), [vec!["f"], vec!["e"], vec!["d", "c", "b", "g", "a"]]);
        assert_eq!(layers(NIXPKGS_EXAMPLE, &["a"], 2), [vec!["f"], vec!["e", "d", "c", "b", "g", "a"]]);
        assert_eq!(layers(NIXPKGS_EXAMPLE, &["a"], 1), [vec!["f", "e", "d", "c", "b", "g", "a"]]);
        assert_eq!(layers(NIXPKGS_EXAMPLE, &["a"], 0), layers(NIXPKGS_EXAMPLE, &["a"], 1));
    }

    #[test]
    fn diamond_bottom_comes_first() {
        let diamond: &[(&str, &[&str])] =
            &[("top", &["left", "right"]), ("left", &["base"]), ("right", &["base"]), ("base", &[])];
        // base 1 + 1 + 1 + 2 = 5; left and right 2 each, tied and ordered by name.
        assert_eq!(layers(diamond, &["top"], 10), [["base"], ["left"], ["right"], ["top"]]);
    }

    #[test]
    fn chain_goes_deepest_first() {
        let chain: &[(&str, &[&str])] = &[("app", &["lib"]), ("lib", &["libc"]), ("libc", &[])];
        assert_eq!(layers(chain, &["app"], 2), [vec!["libc"], vec!["lib", "app"]]);
    }

    #[test]
    fn a_shared_library_beats_private_ones() {
        let shared: &[(&str, &[&str])] = &[
            ("app1", &["glibc", "zlib"]),
            ("app2", &["glibc", "openssl"]),
            ("glibc", &["glibc"]),
            ("openssl", &["glibc"]),
            ("zlib", &["glibc"]),
        ];
        // glibc: reached in 4 ways, plus 1 for each of the 4 paths above it.
        let expected = [vec!["glibc"], vec!["openssl"], vec!["zlib"], vec!["app1", "app2"]];
        assert_eq!(layers(shared, &["app1", "app2"], 4), expected);
    }

    #[test]
    fn same_closure_same_layers_whatever_the_input_order() {
        let mut shuffled = closure(NIXPKGS_EXAMPLE);
        shuffled.reverse();
        let roots = [store("a")];
        assert_eq!(
            layers_by_popularity(&shuffled, &roots, 4),
            layers_by_popularity(&closure(NIXPKGS_EXAMPLE), &roots, 4)
        );
    }

    #[test]
    fn ties_sort_by_name_not_hash() {
        let info = |path: &str| PathInfo { path: path.into(), nar_size: 1, ..PathInfo::default() };
        let closure = [info("/nix/store/aaa-zlib"), info("/nix/store/zzz-bash")];
        let layers = layers_by_popularity(&closure, &[], 5);
        assert_eq!(layers, [vec![PathBuf::from("/nix/store/zzz-bash")], vec![PathBuf::from("/nix/store/aaa-zlib")]]);
    }

    #[test]
    fn an_empty_closure_has_no_layers() {
        assert!(layers_by_popularity(&[], &[], 3).is_empty());
    }
}
