//! The committed CRD files must be exactly what `stackwarden crd` prints, or a cluster would
//! run with a schema that differs from the code. Regenerate with:
//! `cargo run -p stackwarden -- crd > crds/servicestack.yaml && charts/stackwarden/sync-crd.sh`

#[test]
fn committed_crd_matches_generated() {
    let generated = stackwarden::api::crd_yaml();
    for path in [
        "../crds/servicestack.yaml",
        "../charts/stackwarden/crds/servicestack.yaml",
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let committed =
            std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        assert!(
            committed == generated,
            "{path} differs from `stackwarden crd`; regenerate it (see the comment at the top of this test)"
        );
    }
}
