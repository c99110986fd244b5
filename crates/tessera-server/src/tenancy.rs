//! The one place that decides which tenant a request acts in.
//!
//! Today every principal lives in the bootstrap tenant. Handlers never use a
//! tenant id they did not get from here, so per-tenant isolation is a change
//! to this module and the principals, not to every query's caller.

/// The tenant created by the first migration.
pub const BOOTSTRAP_TENANT: &str = "00000000-0000-0000-0000-000000000001";

/// Something that acts within a tenant: an operator, a device.
pub trait TenantScoped {
    fn tenant_id(&self) -> &str;
}

/// The tenant an unauthenticated request (login, pairing) acts in.
pub fn for_anonymous() -> &'static str {
    BOOTSTRAP_TENANT
}

/// The tenant an authenticated principal acts in.
pub fn of<P: TenantScoped>(principal: &P) -> &str {
    principal.tenant_id()
}
