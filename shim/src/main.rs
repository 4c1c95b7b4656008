fn main() {
    predictive_shim::service::main();
}
