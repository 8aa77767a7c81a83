//! One module per CNI verb (VERSION is answered in `run`).

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod pod;
pub mod status;

use sluice_api::Attachment;

use crate::spec::env::Env;

pub fn attachment(env: &Env) -> Attachment {
    Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}
