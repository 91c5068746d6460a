//! openraft's state machine for one group: placement (meta group) and every service's rows,
//! which it hands to the service registry ([`Dispatch`]) by service id.
//!
//! Snapshots are files under `data_dir/snapshots/group-G/`: an 8-byte magic, then length-prefixed
//! records (a [`SnapshotHeader`], then one [`SnapshotRow`] per row). They are written and read
//! row by row, never held whole in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::io::AsyncSeekExt;

use super::entry::{
    BatchResult, Command, CommandResult, Entry, GroupId, LogId, MetaCommand, MetaResult, Refusal, Snapshot,
    SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use super::kv::{self, Dispatch, Handled, Kv, KvRead, ServiceId};
use super::records::{self, LogIdRec, SnapshotHeader, SnapshotRow, StoredMembershipRec};
use super::{PLACEMENT, SERVICES, SM_META, Store, StoreError, meta_key};
use crate::placement::{Layout, Placement};

const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALSN2";
/// Largest single record accepted in a snapshot file.
const MAX_SNAPSHOT_RECORD: u32 = 64 * 1024 * 1024;

/// The state machine of one Raft group.
pub struct StateMachineStore {
    store: Arc<Store>,
    group: GroupId,
}

/// Builds snapshots of one group from a consistent read view.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    group: GroupId,
}

/// Storage errors as openraft takes them (it names what failed itself).
fn io_err(e: impl Into<StoreError>) -> io::Error {
    io::Error::other(e.into())
}

impl StateMachineStore {
    pub(crate) fn new(store: Arc<Store>, group: GroupId) -> Result<Self, StoreError> {
        std::fs::create_dir_all(store.group_snapshot_dir(group))?;
        Ok(Self { store, group })
    }

    /// Applies committed `entries`; one result per entry (see [`Store::apply`]).
    pub(crate) async fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<BatchResult>, StoreError> {
        self.store.apply(self.group, entries)
    }
}

fn read_sm_meta<T>(txn: &redb::ReadTransaction, group: GroupId, key: &str) -> Result<Option<T>, StoreError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let table = txn.open_table(SM_META)?;
    let value = table.get((group, key))?;
    Ok(match value {
        Some(v) => Some(records::decode::<T>(v.value())?),
        None => None,
    })
}

/// The last applied entry and the membership as of it.
type AppliedState = (Option<LogId>, StoredMembership);

fn applied_state(txn: &redb::ReadTransaction, group: GroupId) -> Result<AppliedState, StoreError> {
    let applied = read_sm_meta::<LogIdRec>(txn, group, meta_key::APPLIED)?.map(|r| LogId::from(&r));
    let membership = match read_sm_meta::<StoredMembershipRec>(txn, group, meta_key::MEMBERSHIP)? {
        Some(r) => StoredMembership::try_from(&r)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Rows of one group's services: service → key → value (`None`: deleted).
type ServiceRows = HashMap<ServiceId, BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// State-machine rows applied but not written to the database yet.
#[derive(Default)]
pub(crate) struct Rows {
    /// Per group: every service's changed keys.
    services: HashMap<GroupId, ServiceRows>,
    placement: HashMap<GroupId, Vec<u8>>,
    meta: HashMap<(GroupId, &'static str), Vec<u8>>,
}

impl Rows {
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        let services: usize = self.services.values().flat_map(|s| s.values()).map(BTreeMap::len).sum();
        services + self.placement.len() + self.meta.len()
    }

    /// Writes every row into `txn`'s tables.
    pub(crate) fn write_to(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(SERVICES)?;
        for (group, services) in &self.services {
            for (service, rows) in services {
                for (key, value) in rows {
                    let k = (*group, *service, key.as_slice());
                    match value {
                        Some(v) => table.insert(k, v.as_slice())?,
                        None => table.remove(k)?,
                    };
                }
            }
        }
        let mut placement = txn.open_table(PLACEMENT)?;
        for (group, rec) in &self.placement {
            placement.insert(*group, rec.as_slice())?;
        }
        let mut meta = txn.open_table(SM_META)?;
        for ((group, key), rec) in &self.meta {
            meta.insert((*group, *key), rec.as_slice())?;
        }
        Ok(())
    }

    /// Rows of `newer` replace these.
    fn absorb(&mut self, newer: Rows) {
        for (group, services) in newer.services {
            let mine = self.services.entry(group).or_default();
            for (service, rows) in services {
                mine.entry(service).or_default().extend(rows);
            }
        }
        self.placement.extend(newer.placement);
        self.meta.extend(newer.meta);
    }

    fn service(&self, group: GroupId, service: ServiceId) -> Option<&BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        self.services.get(&group)?.get(&service)
    }
}

/// The state-machine changes not in the database yet. The log writer owns them: it applies
/// committed entries here (no transaction of their own) and writes the dirty rows with the next
/// transaction it commits anyway, or after a short idle pause. Readers look here before the
/// database (dirty rows, then rows being written), so an applied change is visible at once.
#[derive(Default)]
pub(crate) struct Overlay {
    dirty: Rows,
    flushing: Option<Arc<Rows>>,
}

/// The database keys of `(group, service)` from `start` on.
/// One end of a range of service rows.
type RowBound<'a> = Bound<(u64, u16, &'a [u8])>;

fn service_range(group: GroupId, service: ServiceId, start: Bound<&[u8]>) -> (RowBound<'_>, RowBound<'_>) {
    let lower = match start {
        Bound::Included(k) => Bound::Included((group, service, k)),
        Bound::Excluded(k) => Bound::Excluded((group, service, k)),
        Bound::Unbounded => Bound::Included((group, service, &[][..])),
    };
    let upper = match service.checked_add(1) {
        Some(next) => Bound::Excluded((group, next, &[][..])),
        None => Bound::Excluded((group.saturating_add(1), 0, &[][..])),
    };
    (lower, upper)
}

impl Overlay {
    pub(crate) fn is_empty(&self) -> bool {
        self.dirty.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.dirty.len()
    }

    fn layers(&self) -> impl Iterator<Item = &Rows> {
        std::iter::once(&self.dirty).chain(self.flushing.as_deref())
    }

    /// The value under `key` of `service` in `group`: the overlay's, else `db`'s. Read with the
    /// overlay locked and `db` begun after the lock was taken, so a row flushed meanwhile cannot
    /// be missed.
    pub(crate) fn service_get(
        &self,
        db: &ReadTransaction,
        group: GroupId,
        service: ServiceId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.layers().find_map(|r| r.service(group, service)?.get(key)) {
            return Ok(value.clone());
        }
        let table = db.open_table(SERVICES)?;
        Ok(table.get((group, service, key))?.map(|v| v.value().to_vec()))
    }

    /// A prefix scan of `service` in `group` (overlay over `db`; see [`Self::service_get`]).
    pub(crate) fn service_scan(
        &self,
        db: &ReadTransaction,
        group: GroupId,
        service: ServiceId,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<kv::Entries, StoreError> {
        let start = kv::scan_start(prefix, after);
        // Older layers first, so newer rows replace them.
        let mut newer: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let layers: Vec<&Rows> = self.layers().collect();
        for rows in layers.into_iter().rev() {
            if let Some(r) = rows.service(group, service) {
                for (k, v) in r.range::<[u8], _>((start, Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix)) {
                    newer.insert(k.clone(), v.clone());
                }
            }
        }
        let table = db.open_table(SERVICES)?;
        let older = table
            .range(service_range(group, service, start))?
            .map(|item| item.map(|(k, v)| (k.value().2.to_vec(), v.value().to_vec())).map_err(StoreError::from));
        kv::merge_scan(newer, older, prefix, limit)
    }

    /// The placement in `group`'s state (overlay, else `db`; see [`Self::service_get`]).
    pub(crate) fn placement(&self, db: &ReadTransaction, group: GroupId) -> Result<Option<Placement>, StoreError> {
        if let Some(bytes) = self.layers().find_map(|r| r.placement.get(&group)) {
            return Ok(Some(records::decode(bytes)?));
        }
        let table = db.open_table(PLACEMENT)?;
        let value = table.get(group)?;
        Ok(value.map(|v| records::decode(v.value())).transpose()?)
    }

    /// Forgets every row of `group` not written yet (the group's data is being deleted).
    pub(crate) fn forget_group(&mut self, group: GroupId) {
        self.dirty.services.remove(&group);
        self.dirty.placement.remove(&group);
        self.dirty.meta.retain(|(g, _), _| *g != group);
    }

    /// Moves the dirty rows to the "being written" layer and returns them.
    pub(crate) fn start_flush(&mut self) -> Arc<Rows> {
        let rows = Arc::new(std::mem::take(&mut self.dirty));
        self.flushing = Some(Arc::clone(&rows));
        rows
    }

    /// The rows being written are in the database (`ok`), or must be written again.
    pub(crate) fn finish_flush(&mut self, ok: bool) {
        let Some(rows) = self.flushing.take() else { return };
        if !ok {
            let mut again = Arc::try_unwrap(rows).unwrap_or_default();
            again.absorb(std::mem::take(&mut self.dirty));
            self.dirty = again;
        }
    }
}

/// One service's keys in one group as readers see them: the overlay over the database.
pub(crate) struct ReadKv<'a> {
    pub(crate) overlay: &'a Overlay,
    pub(crate) db: &'a ReadTransaction,
    pub(crate) group: GroupId,
    pub(crate) service: ServiceId,
}

impl KvRead for ReadKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.overlay.service_get(self.db, self.group, self.service, key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<kv::Entries, StoreError> {
        self.overlay.service_scan(self.db, self.group, self.service, prefix, after, limit)
    }
}

/// One service's keys in one group as `apply` sees them: writes go to the dirty rows.
struct ApplyKv<'a> {
    overlay: &'a mut Overlay,
    db: &'a ReadTransaction,
    group: GroupId,
    service: ServiceId,
}

impl KvRead for ApplyKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.overlay.service_get(self.db, self.group, self.service, key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<kv::Entries, StoreError> {
        self.overlay.service_scan(self.db, self.group, self.service, prefix, after, limit)
    }
}

impl Kv for ApplyKv<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.rows().insert(key.to_vec(), Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        self.rows().insert(key.to_vec(), None);
    }
}

impl ApplyKv<'_> {
    fn rows(&mut self) -> &mut BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.overlay.dirty.services.entry(self.group).or_default().entry(self.service).or_default()
    }
}

/// The state machine as the log writer applies to it: the overlay over the last committed
/// database state.
pub(crate) struct SmView<'a> {
    overlay: &'a mut Overlay,
    db: redb::ReadTransaction,
    dispatch: &'a dyn Dispatch,
}

impl<'a> SmView<'a> {
    pub(crate) fn new(overlay: &'a mut Overlay, db: redb::ReadTransaction, dispatch: &'a dyn Dispatch) -> Self {
        Self { overlay, db, dispatch }
    }

    fn placement(&self, group: GroupId) -> Result<Option<Placement>, StoreError> {
        self.overlay.placement(&self.db, group)
    }

    fn set_placement(&mut self, group: GroupId, p: &Placement) -> Result<(), StoreError> {
        self.overlay.dirty.placement.insert(group, records::encode(p)?);
        Ok(())
    }

    fn apply_meta(&mut self, group: GroupId, command: &MetaCommand) -> Result<MetaResult, StoreError> {
        Ok(match command {
            MetaCommand::PlacementInit { placement } => match self.placement(group)? {
                Some(existing) => MetaResult::Version(existing.layout.version),
                None => {
                    self.set_placement(group, placement)?;
                    MetaResult::Version(placement.layout.version)
                }
            },
            MetaCommand::MemberUpsert { member } => match self.placement(group)? {
                Some(mut p) => {
                    p.members.insert(member.id, member.clone());
                    self.set_placement(group, &p)?;
                    MetaResult::Version(p.layout.version)
                }
                None => MetaResult::NotInitialised,
            },
            MetaCommand::LayoutSet { expected_version, groups } => match self.placement(group)? {
                Some(mut p) if p.layout.version == *expected_version => {
                    p.layout = Layout { version: expected_version + 1, groups: groups.clone() };
                    self.set_placement(group, &p)?;
                    MetaResult::Version(p.layout.version)
                }
                Some(p) => MetaResult::StaleLayout { current: p.layout.version },
                None => MetaResult::NotInitialised,
            },
        })
    }

    fn apply_command(&mut self, group: GroupId, command: &Command) -> Result<CommandResult, StoreError> {
        match command {
            Command::Meta(meta) => Ok(CommandResult::Meta(self.apply_meta(group, meta)?)),
            Command::Service { service, payload } => {
                let mut kv = ApplyKv { overlay: &mut *self.overlay, db: &self.db, group, service: *service };
                Ok(match self.dispatch.apply(*service, &mut kv, payload)? {
                    Handled::Done(answer) => CommandResult::Service(answer),
                    Handled::UnknownService => CommandResult::Refused(Refusal::UnknownService { service: *service }),
                    Handled::BadPayload => CommandResult::Refused(Refusal::BadPayload { service: *service }),
                })
            }
        }
    }

    /// Applies `entries` of `group`; one result per entry.
    pub(crate) fn apply(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<Vec<BatchResult>, StoreError> {
        let mut results = Vec::with_capacity(entries.len());
        let mut last = None;
        for entry in &entries {
            last = Some(LogIdRec::from(&entry.log_id));
            match &entry.payload {
                EntryPayload::Blank => results.push(BatchResult::default()),
                EntryPayload::Normal(batch) => {
                    let mut out = Vec::with_capacity(batch.0.len());
                    for command in &batch.0 {
                        out.push(self.apply_command(group, command)?);
                    }
                    results.push(BatchResult(out));
                }
                EntryPayload::Membership(m) => {
                    let rec = StoredMembershipRec { log_id: last, membership: m.into() };
                    self.overlay.dirty.meta.insert((group, meta_key::MEMBERSHIP), records::encode(&rec)?);
                    results.push(BatchResult::default());
                }
            }
        }
        if let Some(last) = last {
            self.overlay.dirty.meta.insert((group, meta_key::APPLIED), records::encode(&last)?);
        }
        Ok(results)
    }
}

fn write_record(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("snapshot record too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

fn read_record(input: &mut impl Read) -> Result<Option<Vec<u8>>, StoreError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_SNAPSHOT_RECORD {
        return Err(StoreError::Io(std::io::Error::other(format!("snapshot record of {len} bytes is too large"))));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn pointer_of(header: &SnapshotHeader) -> Result<SnapshotMeta, StoreError> {
    Ok(SnapshotMeta {
        last_log_id: header.last_log_id.as_ref().map(LogId::from),
        last_membership: (&header.last_membership).try_into()?,
    })
}

/// A new name for a snapshot of the state up to `last`: openraft 0.10's snapshots carry no id,
/// the file name is Shoal's own.
fn new_snapshot_id(last: Option<&LogId>) -> String {
    format!(
        "{}-{}-{:016x}",
        last.map(|l| l.leader_id.term).unwrap_or(0),
        last.map(|l| l.index).unwrap_or(0),
        rand::random::<u64>()
    )
}

/// Opens a new `incoming-*.part` file in `group`'s snapshot folder to receive a snapshot into.
pub(crate) async fn incoming_snapshot(store: &Store, group: GroupId) -> Result<SnapshotData, StoreError> {
    let dir = store.group_snapshot_dir(group);
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!("incoming-{:016x}.part", rand::random::<u64>()));
    let file = tokio::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).await?;
    Ok(SnapshotData { file, path })
}

/// Removes the `*.part` files a crash left in the groups' snapshot folders (snapshots being
/// built or received then); nothing is building or receiving while the store opens.
pub(crate) fn remove_partial_snapshots(snapshot_dir: &Path) -> Result<(), StoreError> {
    for group in std::fs::read_dir(snapshot_dir)? {
        let group = group?.path();
        if !group.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&group)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Whether `path` is a received snapshot in `dir` (moved into place when installed).
fn is_incoming(dir: &Path, path: &Path) -> bool {
    path.parent() == Some(dir) && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("incoming-"))
}

fn snapshot_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.snap"))
}

/// Records `header` as the group's current snapshot (durably) and removes older snapshot files.
fn set_current_snapshot(
    store: &Store,
    group: GroupId,
    header: &SnapshotHeader,
    txn: Option<WriteTransaction>,
) -> Result<(), StoreError> {
    let mut txn = match txn {
        Some(t) => t,
        None => store.db().begin_write()?,
    };
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(SM_META)?;
        meta.insert((group, meta_key::SNAPSHOT), records::encode(header)?.as_slice())?;
    }
    txn.commit()?;
    let dir = store.group_snapshot_dir(group);
    let keep = snapshot_file(&dir, &header.snapshot_id);
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path != keep && path.extension().is_some_and(|e| e == "snap") {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn build_blocking(store: &Store, group: GroupId) -> Result<SnapshotHeader, StoreError> {
    let txn = store.db().begin_read()?;
    let (applied, membership) = applied_state(&txn, group)?;
    let snapshot_id = new_snapshot_id(applied.as_ref());
    let header = SnapshotHeader {
        last_log_id: applied.as_ref().map(LogIdRec::from),
        last_membership: (&membership).into(),
        snapshot_id,
    };
    let dir = store.group_snapshot_dir(group);
    let tmp = dir.join(format!("{}.part", header.snapshot_id));
    {
        let file = std::fs::File::create(&tmp)?;
        let mut out = BufWriter::new(file);
        out.write_all(SNAPSHOT_MAGIC)?;
        write_record(&mut out, &records::encode(&header)?)?;
        let placement = txn.open_table(PLACEMENT)?;
        if let Some(v) = placement.get(group)? {
            write_record(&mut out, &records::encode(&SnapshotRow::Placement { record: v.value().to_vec() })?)?;
        }
        let table = txn.open_table(SERVICES)?;
        for item in table.range((group, 0, &[][..])..(group.saturating_add(1), 0, &[][..]))? {
            let (k, v) = item?;
            let (_, service, key) = k.value();
            let row = SnapshotRow::Service { service, key: key.to_vec(), value: v.value().to_vec() };
            write_record(&mut out, &records::encode(&row)?)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, snapshot_file(&dir, &header.snapshot_id))?;
    set_current_snapshot(store, group, &header, None)?;
    Ok(header)
}

/// Replaces the group's state with the snapshot in `file`, in one transaction.
fn install_blocking(
    store: &Store,
    group: GroupId,
    meta: &SnapshotMeta,
    file: std::fs::File,
    source: PathBuf,
) -> Result<(), StoreError> {
    let mut input = BufReader::new(file);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(StoreError::Io(std::io::Error::other("not a shoal snapshot file")));
    }
    // The header inside the file is informative; openraft's meta is authoritative.
    read_record(&mut input)?.ok_or_else(|| StoreError::Io(std::io::Error::other("snapshot without header")))?;
    let header = SnapshotHeader {
        last_log_id: meta.last_log_id.as_ref().map(LogIdRec::from),
        last_membership: (&meta.last_membership).into(),
        snapshot_id: new_snapshot_id(meta.last_log_id.as_ref()),
    };
    let txn = store.db().begin_write()?;
    {
        let mut placement = txn.open_table(PLACEMENT)?;
        placement.remove(group)?;
        let mut services = txn.open_table(SERVICES)?;
        services.retain_in((group, 0, &[][..])..(group.saturating_add(1), 0, &[][..]), |_, _| false)?;
        while let Some(bytes) = read_record(&mut input)? {
            match records::decode::<SnapshotRow>(&bytes)? {
                SnapshotRow::Placement { record } => {
                    // Validated before it is stored.
                    records::decode::<Placement>(&record)?;
                    placement.insert(group, record.as_slice())?;
                }
                SnapshotRow::Service { service, key, value } => {
                    services.insert((group, service, key.as_slice()), value.as_slice())?;
                }
            }
        }
        let mut sm = txn.open_table(SM_META)?;
        match &header.last_log_id {
            Some(l) => sm.insert((group, meta_key::APPLIED), records::encode(l)?.as_slice())?,
            None => sm.remove((group, meta_key::APPLIED))?,
        };
        sm.insert((group, meta_key::MEMBERSHIP), records::encode(&header.last_membership)?.as_slice())?;
    }
    // Keep the received file as the current snapshot (any other source is copied).
    let dir = store.group_snapshot_dir(group);
    let target = snapshot_file(&dir, &header.snapshot_id);
    match is_incoming(&dir, &source) {
        true => std::fs::rename(&source, &target)?,
        false => {
            let mut source = input.into_inner();
            std::io::Seek::seek(&mut source, std::io::SeekFrom::Start(0))?;
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut source, &mut out)?;
            out.sync_all()?;
        }
    }
    set_current_snapshot(store, group, &header, Some(txn))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.store.flush().await.map_err(io_err)?;
        let store = Arc::clone(&self.store);
        let group = self.group;
        let header = blocking(move || build_blocking(&store, group)).await.map_err(io_err)?;
        let path = snapshot_file(&self.store.group_snapshot_dir(self.group), &header.snapshot_id);
        let file = tokio::fs::File::open(&path).await?;
        Ok(Snapshot { meta: pointer_of(&header).map_err(io_err)?, snapshot: SnapshotData { file, path } })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.store.flush().await.map_err(io_err)?;
        let txn = self.store.db().begin_read().map_err(io_err)?;
        applied_state(&txn, self.group).map_err(io_err)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let results = self.apply_entries(batch).await.map_err(io_err)?;
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { store: Arc::clone(&self.store), group: self.group }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        // Rows applied before the snapshot must not be written over the installed state later.
        self.store.flush().await.map_err(io_err)?;
        let SnapshotData { mut file, path } = snapshot;
        file.sync_all().await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        let file = file.into_std().await;
        let store = Arc::clone(&self.store);
        let group = self.group;
        let meta = meta.clone();
        blocking(move || install_blocking(&store, group, &meta, file, path)).await.map_err(io_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let header = {
            let txn = self.store.db().begin_read().map_err(io_err)?;
            read_sm_meta::<SnapshotHeader>(&txn, self.group, meta_key::SNAPSHOT).map_err(io_err)?
        };
        let Some(header) = header else {
            return Ok(None);
        };
        let path = snapshot_file(&self.store.group_snapshot_dir(self.group), &header.snapshot_id);
        let file = tokio::fs::File::open(&path).await?;
        Ok(Some(Snapshot { meta: pointer_of(&header).map_err(io_err)?, snapshot: SnapshotData { file, path } }))
    }
}
