//! Every RPC of `keyward.v1`, read from the descriptor set the server serves
//! for reflection (`keyward::pb::FILE_DESCRIPTOR_SET`), so a test that must
//! cover every RPC covers one added to the proto without anyone editing a list.

use prost::Message;

/// The proto package whose services the server implements.
pub const PACKAGE: &str = "keyward.v1";

/// One method of one `keyward.v1` service, as the descriptor describes it.
#[derive(Clone, Debug)]
pub struct Rpc {
    /// The service's short name, e.g. `KeyService`.
    pub service: String,
    /// The method's name, e.g. `CreateKey`.
    pub method: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

impl Rpc {
    /// The gRPC path, e.g. `/keyward.v1.KeyService/CreateKey`.
    pub fn path(&self) -> String {
        format!("/{PACKAGE}.{}/{}", self.service, self.method)
    }
}

/// Every method of every `keyward.v1` service, in the order the proto
/// declares them. Panics if the descriptor lists none, so a test looping over
/// this list cannot pass vacuously.
pub fn all() -> Vec<Rpc> {
    let set = prost_types::FileDescriptorSet::decode(keyward::pb::FILE_DESCRIPTOR_SET)
        .expect("keyward::pb::FILE_DESCRIPTOR_SET decodes as a FileDescriptorSet");
    let rpcs: Vec<Rpc> = set
        .file
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            service.method.iter().map(|m| Rpc {
                service: service.name().to_string(),
                method: m.name().to_string(),
                client_streaming: m.client_streaming(),
                server_streaming: m.server_streaming(),
            })
        })
        .collect();
    assert!(!rpcs.is_empty(), "the descriptor set lists no {PACKAGE} service");
    rpcs
}
