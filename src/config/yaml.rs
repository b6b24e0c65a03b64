//! YAML text → a small tree whose every node knows its line and column, so that configuration
//! errors can point at the exact place. Parsing is `saphyr`'s (YAML 1.2, maintained, pure
//! Rust); this module only converts its marked nodes.

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// A position in the source, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order: key, key position, value.
    Map(Vec<(String, Pos, Node)>),
}

impl Kind {
    /// What the node is, for messages ("a string", "a list", ...).
    pub fn describe(&self) -> String {
        match self {
            Kind::Null => "empty".into(),
            Kind::Bool(b) => format!("the boolean {b}"),
            Kind::Int(i) => format!("the number {i}"),
            Kind::Float(f) => format!("the number {f}"),
            Kind::Str(s) => format!("the string `{s}`"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
        }
    }
}

fn pos(m: &saphyr::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn convert(n: MarkedYamlOwned) -> Result<Node, (Pos, String)> {
    let p = pos(&n.span.start);
    let kind = match n.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => Kind::Null,
            ScalarOwned::Boolean(b) => Kind::Bool(b),
            ScalarOwned::Integer(i) => Kind::Int(i),
            ScalarOwned::FloatingPoint(f) => Kind::Float(f.into_inner()),
            ScalarOwned::String(s) => Kind::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => Kind::Str(s),
        YamlDataOwned::Sequence(items) => {
            Kind::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlDataOwned::Mapping(map) => {
            let mut entries = Vec::new();
            for (k, v) in map {
                let kp = pos(&k.span.start);
                let key = match k.data {
                    YamlDataOwned::Value(ScalarOwned::String(s))
                    | YamlDataOwned::Representation(s, _, _) => s,
                    YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
                    YamlDataOwned::Value(ScalarOwned::Boolean(b)) => b.to_string(),
                    _ => return Err((kp, "a mapping key must be a plain word".into())),
                };
                entries.push((key, kp, convert(v)?));
            }
            Kind::Map(entries)
        }
        YamlDataOwned::Tagged(_, inner) => return convert(*inner),
        YamlDataOwned::Alias(_) => return Err((p, "YAML aliases are not supported".into())),
        YamlDataOwned::BadValue => return Err((p, "this value cannot be read".into())),
    };
    Ok(Node { pos: p, kind })
}

/// Parses one YAML document (an empty text is an empty mapping).
pub fn parse(text: &str) -> Result<Node, (Pos, String)> {
    let docs = MarkedYamlOwned::load_from_str(text)
        .map_err(|e| (pos(e.marker()), e.info().to_string()))?;
    let mut docs = docs.into_iter();
    let first = docs.next();
    if let Some(second) = docs.next() {
        return Err((
            pos(&second.span.start),
            "only one YAML document is expected".into(),
        ));
    }
    match first {
        None => Ok(Node {
            pos: Pos { line: 1, col: 1 },
            kind: Kind::Map(vec![]),
        }),
        Some(n) => convert(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_where_they_are() {
        let n = parse("a: 1\nb:\n  c: [x, 2.5]\n  d: true\n").unwrap();
        let Kind::Map(entries) = n.kind else { panic!() };
        assert_eq!(entries[0].0, "a");
        assert_eq!(entries[0].2.kind, Kind::Int(1));
        let Kind::Map(b) = &entries[1].2.kind else {
            panic!()
        };
        assert_eq!(b[0].1, Pos { line: 3, col: 3 });
        let Kind::Seq(items) = &b[0].2.kind else {
            panic!()
        };
        assert_eq!(items[0].kind, Kind::Str("x".into()));
        assert_eq!(items[1].kind, Kind::Float(2.5));
        assert_eq!(b[1].2.kind, Kind::Bool(true));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (p, msg) = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(p.line >= 1 && !msg.is_empty());
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .1
                .contains("one YAML document")
        );
        assert_eq!(parse("").unwrap().kind, Kind::Map(vec![]));
    }
}
