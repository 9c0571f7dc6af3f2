//! The OCI Distribution API, pull side (Docker Registry V2 compatible):
//! routing, content negotiation, errors, handlers.

pub mod api;
pub mod error;
pub mod negotiate;
pub mod routes;

pub use api::Registry;
pub use error::{ErrorCode, RegistryError};
