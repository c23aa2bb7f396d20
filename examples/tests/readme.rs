//! README.md shows `examples/embed.rs` as the embedding example; they must not drift.

#[test]
fn the_readme_embedding_example_is_embed_rs() {
    let readme = include_str!("../../README.md");
    let start_marker = "<!-- embed:start -->\n```rust\n";
    let start = readme.find(start_marker).expect("start marker");
    let end = readme.find("```\n<!-- embed:end -->").expect("end marker");
    let shown = &readme[start + start_marker.len()..end];
    let example = include_str!("../examples/embed.rs");
    // The example's module docs say how to run it; the README says so in its own words.
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown, code,
        "README.md's embedding example differs from examples/embed.rs"
    );
}
