//! Prints the manifests of a fleet spec: `cargo run -p caxton-k8s --example render -- FLEET [argo]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: render FLEET [kubernetes|argo]")?;
    let target = args.next().as_deref().unwrap_or("kubernetes").parse()?;
    let fleet = caxton_k8s::Fleet::parse(&std::fs::read_to_string(path)?)?;
    print!(
        "{}",
        caxton_k8s::to_yaml(&caxton_k8s::manifests(&fleet, target)?)?
    );
    Ok(())
}
