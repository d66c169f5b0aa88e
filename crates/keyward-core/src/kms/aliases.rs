//! Aliases: CreateAlias, UpdateAlias and DeleteAlias. An alias names one
//! key; the key is never touched by any of them.

use super::pipeline::{note_in, resolve_in, Plan};
use super::{Caller, KeyView, Kms};
use crate::{AliasChange, KeyState, KmsError, Operation, Role};

impl Kms {
    /// `CreateAlias`: points a new alias at a key.
    pub async fn create_alias(&self, caller: &Caller, alias: &str, key: &str) -> Result<KeyView, KmsError> {
        self.lifecycle(caller, Operation::CreateAlias, |p| {
            note_in(p.state, p.entry, key);
            if crate::validate_alias("alias", alias).is_ok() {
                p.entry.alias = Some(alias.to_string());
            }
            self.require(caller, Role::Admin, "manage aliases")?;
            crate::validate_alias("alias", alias)?;
            let live = resolve_in(p.state, p.entry, "key_id", key)?;
            p.entry.alias = Some(alias.to_string());
            let meta = live.meta();
            if matches!(meta.state, KeyState::Destroyed | KeyState::PendingDeletion) {
                return Err(KmsError::FailedPrecondition(format!(
                    "key {} is {}",
                    meta.id,
                    meta.state.as_str()
                )));
            }
            if p.state.aliases.contains_key(alias) {
                return Err(KmsError::AlreadyExists(alias.to_string()));
            }
            let mut output = p.state.view(meta);
            output.aliases.push(alias.to_string());
            output.aliases.sort();
            let aliases = vec![AliasChange::set(alias, meta.id)];
            Ok(Plan::Change { keys: Vec::new(), aliases, output })
        })
        .await
    }

    /// `UpdateAlias`: points an existing alias at another key, in one write
    /// (AWS KMS's UpdateAlias).
    pub async fn update_alias(&self, caller: &Caller, alias: &str, key: &str) -> Result<KeyView, KmsError> {
        self.lifecycle(caller, Operation::UpdateAlias, |p| {
            note_in(p.state, p.entry, key);
            if crate::validate_alias("alias", alias).is_ok() {
                p.entry.alias = Some(alias.to_string());
            }
            self.require(caller, Role::Admin, "manage aliases")?;
            crate::validate_alias("alias", alias)?;
            if !p.state.aliases.contains_key(alias) {
                return Err(KmsError::NotFound(alias.to_string()));
            }
            let live = resolve_in(p.state, p.entry, "key_id", key)?;
            let meta = live.meta();
            if matches!(meta.state, KeyState::Destroyed | KeyState::PendingDeletion) {
                return Err(KmsError::FailedPrecondition(format!(
                    "key {} is {}",
                    meta.id,
                    meta.state.as_str()
                )));
            }
            let mut output = p.state.view(meta);
            if !output.aliases.iter().any(|a| a == alias) {
                output.aliases.push(alias.to_string());
                output.aliases.sort();
            }
            let aliases = vec![AliasChange::set(alias, meta.id)];
            Ok(Plan::Change { keys: Vec::new(), aliases, output })
        })
        .await
    }

    /// `ListAliases` (AWS KMS's): every alias with its key, by name, or only
    /// those of `key`; at most `limit` after `after`, and whether more follow.
    /// One audited read (admin role, as ListKeys).
    pub async fn list_aliases(
        &self,
        caller: &Caller,
        key: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, crate::KeyId)>, bool), KmsError> {
        let mut entry = self.entry(caller, Operation::ListAliases);
        let result = (|| {
            let only = match key {
                Some(k) => Some(self.resolve(&mut entry, "key_id", k)?.meta().id),
                None => None,
            };
            self.require(caller, Role::Admin, "list aliases")?;
            let s = self.state.read().expect("state lock");
            let mut out: Vec<(String, crate::KeyId)> = s
                .aliases
                .iter()
                .filter(|(a, id)| only.is_none_or(|o| **id == o) && after.is_none_or(|m| a.as_str() > m))
                .take(limit.saturating_add(1))
                .map(|(a, id)| (a.clone(), *id))
                .collect();
            let more = out.len() > limit;
            out.truncate(limit);
            Ok((out, more))
        })();
        self.finish(entry, result).await
    }

    /// `DeleteAlias`: removes an alias (the key is untouched).
    pub async fn delete_alias(&self, caller: &Caller, alias: &str) -> Result<(), KmsError> {
        self.lifecycle(caller, Operation::DeleteAlias, |p| {
            note_in(p.state, p.entry, alias);
            self.require(caller, Role::Admin, "manage aliases")?;
            crate::validate_alias("alias", alias)?;
            p.entry.alias = Some(alias.to_string());
            let id = *p.state.aliases.get(alias).ok_or_else(|| KmsError::NotFound(alias.to_string()))?;
            p.entry.key_id = Some(id);
            Ok(Plan::Change {
                keys: Vec::new(),
                aliases: vec![AliasChange::Remove(alias.to_string())],
                output: (),
            })
        })
        .await
    }
}
