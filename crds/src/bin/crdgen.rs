//! Prints the ProcessWatch CRD:
//! `cargo run -p procwatch-crds --bin crdgen > config/crd/processwatches.yaml`

fn main() {
    match procwatch_crds::crd_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD: {error}");
            std::process::exit(1);
        }
    }
}
