//! The authenticate phase: the virtual key the client presented, and the attribution it carries.

use crate::call::CallCtx;
use crate::error::GatewayError;
use crate::keys::KeyStore;

/// Finds the call's key and fills its attribution into the event.
pub fn authenticate(keys: &KeyStore, ctx: &mut CallCtx) -> Result<(), GatewayError> {
    let key = keys.authenticate(&ctx.headers)?;
    key.attribute(&mut ctx.guard.event, &ctx.headers);
    ctx.key = Some(key);
    Ok(())
}
