//! The dependency DAG between resource addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::addr::Address;

/// Why a set of edges is not a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("dependency cycle: {}", render_cycle(.0))]
    Cycle(Vec<Address>),
}

fn render_cycle(cycle: &[Address]) -> String {
    let mut s: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    if let Some(first) = cycle.first() {
        s.push(first.to_string());
    }
    s.join(" -> ")
}

/// A directed acyclic graph: each node maps to the nodes it depends on.
/// Dependencies on nodes outside the graph are kept out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    deps: BTreeMap<Address, BTreeSet<Address>>,
}

impl Graph {
    /// Builds the graph, dropping edges to unknown nodes, and rejects cycles.
    pub fn new(
        nodes: impl IntoIterator<Item = (Address, BTreeSet<Address>)>,
    ) -> Result<Self, GraphError> {
        let mut deps: BTreeMap<Address, BTreeSet<Address>> = nodes.into_iter().collect();
        let known: BTreeSet<Address> = deps.keys().cloned().collect();
        for d in deps.values_mut() {
            d.retain(|a| known.contains(a));
        }
        let g = Graph { deps };
        if let Some(cycle) = g.find_cycle() {
            return Err(GraphError::Cycle(cycle));
        }
        Ok(g)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Address> {
        self.deps.keys()
    }

    pub fn dependencies(&self, addr: &Address) -> impl Iterator<Item = &Address> {
        self.deps.get(addr).into_iter().flatten()
    }

    /// Nodes that depend directly on `addr`.
    pub fn dependents(&self, addr: &Address) -> impl Iterator<Item = &Address> {
        self.deps
            .iter()
            .filter(move |(_, d)| d.contains(addr))
            .map(|(a, _)| a)
    }

    /// Every node reachable through dependents of `addr` (not including it).
    pub fn transitive_dependents(&self, addr: &Address) -> BTreeSet<Address> {
        let mut out = BTreeSet::new();
        let mut todo = vec![addr.clone()];
        while let Some(a) = todo.pop() {
            for d in self.dependents(&a) {
                if out.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        out
    }

    /// Dependencies before dependents; ties broken by address order.
    pub fn topo_order(&self) -> Vec<Address> {
        let mut remaining: BTreeMap<&Address, usize> =
            self.deps.iter().map(|(a, d)| (a, d.len())).collect();
        let mut ready: BTreeSet<&Address> = remaining
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(a, _)| *a)
            .collect();
        let mut order = Vec::with_capacity(self.deps.len());
        while let Some(next) = ready.pop_first() {
            remaining.remove(next);
            order.push(next.clone());
            for dependent in self.dependents(next) {
                if let Some(n) = remaining.get_mut(dependent) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(dependent);
                    }
                }
            }
        }
        order
    }

    fn find_cycle(&self) -> Option<Vec<Address>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<&Address, Mark> = BTreeMap::new();
        for start in self.deps.keys() {
            if marks.contains_key(start) {
                continue;
            }
            // Iterative DFS keeping the current path so the cycle can be named.
            let mut path: Vec<&Address> = vec![start];
            let mut iters = vec![self.deps[start].iter()];
            marks.insert(start, Mark::Visiting);
            while let Some(it) = iters.last_mut() {
                match it.next() {
                    Some(next) => match marks.get(next) {
                        Some(Mark::Visiting) => {
                            let pos = path.iter().position(|a| *a == next).unwrap_or(0);
                            // `path` runs dependent -> dependency; report it in
                            // that direction starting from the smallest address.
                            let mut cycle: Vec<Address> =
                                path[pos..].iter().map(|a| (*a).clone()).collect();
                            let min = cycle
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, a)| *a)
                                .map(|(i, _)| i)
                                .unwrap_or(0);
                            cycle.rotate_left(min);
                            return Some(cycle);
                        }
                        Some(Mark::Done) => {}
                        None => {
                            marks.insert(next, Mark::Visiting);
                            path.push(next);
                            iters.push(self.deps[next].iter());
                        }
                    },
                    None => {
                        iters.pop();
                        if let Some(done) = path.pop() {
                            marks.insert(done, Mark::Done);
                        }
                    }
                }
            }
        }
        None
    }

    /// Graphviz DOT, edges from dependent to dependency.
    pub fn to_dot(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph \"{}\" {{", title.replace('"', "\\\""));
        let _ = writeln!(s, "  rankdir = \"RL\";");
        let _ = writeln!(s, "  node [shape = box];");
        for (a, deps) in &self.deps {
            let _ = writeln!(s, "  \"{a}\";");
            for d in deps {
                let _ = writeln!(s, "  \"{a}\" -> \"{d}\";");
            }
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn g(edges: &[(&str, &[&str])]) -> Result<Graph, GraphError> {
        Graph::new(
            edges
                .iter()
                .map(|(n, d)| (a(n), d.iter().map(|x| a(x)).collect())),
        )
    }

    #[test]
    fn topo_order_puts_dependencies_first() {
        let graph = g(&[
            ("aws.subnet.a", &["aws.vpc.main"]),
            ("aws.vpc.main", &[]),
            (
                "aws.route.r",
                &["aws.route_table.t", "aws.internet_gateway.i"],
            ),
            ("aws.route_table.t", &["aws.vpc.main"]),
            ("aws.internet_gateway.i", &["aws.vpc.main"]),
        ])
        .unwrap();
        let order: Vec<String> = graph.topo_order().iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "aws.vpc.main",
                "aws.internet_gateway.i",
                "aws.route_table.t",
                "aws.route.r",
                "aws.subnet.a"
            ]
        );
        let deps: Vec<String> = graph
            .transitive_dependents(&a("aws.vpc.main"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(deps.len(), 4);
    }

    #[test]
    fn names_the_cycle() {
        let err = g(&[
            ("aws.vpc.main", &[]),
            ("aws.subnet.b", &["aws.subnet.c"]),
            ("aws.subnet.c", &["aws.subnet.a"]),
            ("aws.subnet.a", &["aws.subnet.b", "aws.vpc.main"]),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dependency cycle: aws.subnet.a -> aws.subnet.b -> aws.subnet.c -> aws.subnet.a"
        );
        let self_loop = g(&[("aws.vpc.x", &["aws.vpc.x"])]).unwrap_err();
        assert_eq!(
            self_loop.to_string(),
            "dependency cycle: aws.vpc.x -> aws.vpc.x"
        );
    }

    #[test]
    fn dot_lists_nodes_and_edges() {
        let graph = g(&[("aws.subnet.a", &["aws.vpc.main"]), ("aws.vpc.main", &[])]).unwrap();
        let dot = graph.to_dot("smallcase");
        assert!(dot.starts_with("digraph \"smallcase\" {"));
        assert!(dot.contains("\"aws.subnet.a\" -> \"aws.vpc.main\";"));
    }
}
