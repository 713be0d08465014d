//! Unpinning: every shard of a dataset released on its holder, every
//! manifest copy deleted, then the local record. Idempotent: run it again
//! while some holder is down.

use std::sync::Arc;

use cairn_api::UnpinOutcome;
use cairn_proto::Cid;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Datasets, PINS, PROBE_TIMEOUT};
use crate::error::{Error, Result};
use cairn_proto::Role;

impl Datasets {
    /// Deletes a dataset's shards, manifest copies and local record. Idempotent.
    pub async fn unpin(&self, cid: Cid) -> Result<UnpinOutcome> {
        let ctx = self;
        self.forget(&cid);
        let pins = self.store.kv(PINS)?;
        let ds = match self.open_uncached(cid).await {
            Ok(ds) => ds,
            Err(e) => {
                // Already gone everywhere: nothing left to do but the local record.
                if pins.get(&cid.0)?.is_some() || ctx.store.manifest_owner(&cid.0)?.is_some() {
                    return Err(e);
                }
                return Ok(UnpinOutcome {
                    cid: cid.to_string(),
                    shards_deleted: 0,
                    shards_pending: 0,
                    manifest_copies_deleted: 0,
                    validators_released: 0,
                });
            }
        };
        let m = &ds.manifest;
        if m.owner != self.node_id {
            return Err(Error::BadRequest(format!(
                "{cid} belongs to node {}; only its owner may unpin it",
                m.owner
            )));
        }
        // The validators stop auditing first, so the deletes below are not
        // taken for lost shards.
        let released = self.notify_validators(cid, true).await;
        let total = m.total_shards();
        let mut set = JoinSet::new();
        let sem = Arc::new(Semaphore::new(16));
        for s in 0..m.segments.len() {
            for i in 0..total {
                if let Some(node) = ds.placement.holder(s, i, total) {
                    let (client, addr, id, sem) = (
                        Arc::clone(&ctx.client),
                        ds.addr(&node),
                        m.segments[s].shards[i],
                        Arc::clone(&sem),
                    );
                    set.spawn(async move {
                        let _p = sem.acquire_owned().await.expect("open");
                        tokio::time::timeout(
                            PROBE_TIMEOUT * 2,
                            client.delete_shard(&addr, id, None),
                        )
                        .await
                        .map(|r| r.is_ok())
                        .unwrap_or(false)
                    });
                }
            }
        }
        let (mut deleted, mut pending) = (0, 0);
        while let Some(r) = set.join_next().await {
            if r.unwrap_or(false) {
                deleted += 1;
            } else {
                pending += 1;
            }
        }
        let mut copies = 0;
        for member in ds.members.values().filter(|m| m.role == Role::Miner) {
            let addr = member.endpoint_addr();
            if let Ok(Ok(())) =
                tokio::time::timeout(PROBE_TIMEOUT, ctx.client.delete_manifest(&addr, cid.0)).await
            {
                copies += 1;
            }
        }
        if pending == 0 {
            ctx.store.delete_records(&cid.0)?;
            pins.delete(&cid.0)?;
        }
        Ok(UnpinOutcome {
            cid: cid.to_string(),
            shards_deleted: deleted,
            shards_pending: pending,
            manifest_copies_deleted: copies,
            validators_released: released,
        })
    }
}
