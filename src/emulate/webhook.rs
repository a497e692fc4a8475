//! webhook emulator (being written).

/// Emulator options.
#[derive(Clone, Debug, Default)]
pub struct Options {}

/// The emulator's HTTP routes.
pub fn router(_options: Options) -> axum::Router {
    axum::Router::new()
}
