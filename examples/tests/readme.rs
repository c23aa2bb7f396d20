//! README.md shows `examples/minimal_host.rs` as the embedding example; they must not drift.

#[test]
fn the_readme_embedding_example_is_the_minimal_host() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- minimal_host:start -->\n```rust\n")
        .expect("start marker");
    let end = readme
        .find("```\n<!-- minimal_host:end -->")
        .expect("end marker");
    let shown = &readme[start + "<!-- minimal_host:start -->\n```rust\n".len()..end];
    let example = include_str!("../examples/minimal_host.rs");
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown, code,
        "README.md's embedding example differs from examples/minimal_host.rs"
    );
}
