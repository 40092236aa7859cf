//! The event archive: a session's events older than its workflow's bounded
//! window, in the blob store. The workflow asks for a chunk at a turn
//! boundary (LiveService.ArchiveEvents, from an activity) and keeps only the
//! newest chunk's digest and the offset it reaches; each chunk names the one
//! before it, so StreamEvents walks back from the newest to the chunk that
//! holds the offset a client asked for, then replays forward. Chunks hold
//! the encoded events exactly as the window did, so a replayed event is
//! byte for byte the one first delivered.

use keel_blobstore::{BlobError, BlobStore};
use keel_proto::v1 as pb;
use keel_workflow_api::EventArchive;
use serde::{Deserialize, Serialize};
use tonic::Status;

/// Chunks read per StreamEvents call at most while walking back; a session
/// with more than this many chunks before the asked offset is answered with
/// a gap for the older part.
const MAX_CHUNKS_WALKED: usize = 10_000;

/// One stored chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Chunk {
    /// The session key, so a chunk is never mistaken for another session's.
    pub session: String,
    /// The previous chunk's digest; `None` for the session's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// The offset of `events[0]` (for an empty chunk: the offset after the
    /// range it covers).
    pub first: u64,
    /// Base64 of encoded `keel.v1.Event`s, dense from `first`.
    pub events: Vec<String>,
}

pub(crate) async fn store(blobs: &BlobStore, chunk: &Chunk) -> Result<String, Status> {
    blobs
        .put_json(chunk)
        .await
        .map_err(|e| crate::errors::blob_store(format!("cannot store an event archive chunk: {e}")))
}

async fn load(blobs: &BlobStore, session: &str, digest: &str) -> Result<Chunk, Status> {
    let chunk: Chunk = blobs.get_json(digest).await.map_err(|e| match e {
        BlobError::NotFound(_) => crate::errors::corrupt_event(format!(
            "the event archive chunk {digest} is missing from the blob store"
        )),
        e => crate::errors::blob_store(format!("cannot read the event archive: {e}")),
    })?;
    if chunk.session != session {
        return Err(crate::errors::corrupt_event(format!(
            "the event archive chunk {digest} belongs to another session"
        )));
    }
    Ok(chunk)
}

/// Archived events one call replays at most (whole chunks: a little more).
pub(crate) const MAX_EVENTS_PER_READ: usize = 4096;

/// The archived events with offsets in `(*after, before)`, in order, with a
/// gap where the archive lacks some, advancing `*after`. At most about
/// [`MAX_EVENTS_PER_READ`] (whole chunks) per call, so a replica never holds
/// a long session's whole history at once: `true` when more remain, to read
/// with another call.
pub(crate) async fn read(
    blobs: &BlobStore,
    session: &str,
    archive: &EventArchive,
    after: &mut u64,
    before: u64,
) -> Result<(Vec<pb::StreamEventsResponse>, bool), Status> {
    // Walk back to the chunk holding `after + 1`, remembering digests only.
    let mut chain = Vec::new();
    let mut next = Some(archive.head.clone());
    while let Some(digest) = next.take() {
        if chain.len() >= MAX_CHUNKS_WALKED {
            break;
        }
        let chunk = load(blobs, session, &digest).await?;
        let first = chunk.first;
        chain.push(digest);
        if first > *after + 1 {
            next = chunk.prev;
        }
    }
    let mut out = Vec::new();
    let mut events = 0;
    let mut chunks = chain.iter().rev().peekable();
    while let Some(digest) = chunks.next() {
        let chunk = load(blobs, session, digest).await?;
        for (i, encoded) in chunk.events.iter().enumerate() {
            let offset = chunk.first + i as u64;
            if offset <= *after || offset >= before {
                continue;
            }
            if offset > *after + 1 {
                out.push(gap(*after, offset));
            }
            out.push(pb::StreamEventsResponse {
                kind: Some(pb::stream_events_response::Kind::Event(
                    crate::events::decode(encoded)?,
                )),
            });
            events += 1;
            *after = offset;
        }
        if events >= MAX_EVENTS_PER_READ && chunks.peek().is_some() && *after + 1 < before {
            return Ok((out, true));
        }
    }
    if *after + 1 < before {
        out.push(gap(*after, before));
        *after = before - 1;
    }
    Ok((out, false))
}

fn gap(after: u64, first_retained: u64) -> pb::StreamEventsResponse {
    pb::StreamEventsResponse {
        kind: Some(pb::stream_events_response::Kind::Gap(pb::EventGap {
            after_offset: after,
            first_retained_offset: first_retained,
            // Only the session's own log is archived.
            agent_id: String::new(),
        })),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;
    use prost::Message as _;

    use super::*;

    fn encoded(offset: u64) -> String {
        let e = pb::Event {
            offset,
            ..Default::default()
        };
        base64::engine::general_purpose::STANDARD.encode(e.encode_to_vec())
    }

    async fn chain(blobs: &BlobStore, ranges: &[(u64, u64)]) -> EventArchive {
        let mut prev = None;
        let mut upto = 0;
        for &(first, last) in ranges {
            let chunk = Chunk {
                session: "s".into(),
                prev: prev.clone(),
                first,
                events: (first..=last).map(encoded).collect(),
            };
            prev = Some(store(blobs, &chunk).await.unwrap());
            upto = last;
        }
        EventArchive {
            head: prev.unwrap(),
            upto,
        }
    }

    fn offsets(out: &[pb::StreamEventsResponse]) -> Vec<String> {
        out.iter()
            .map(|r| match &r.kind {
                Some(pb::stream_events_response::Kind::Event(e)) => e.offset.to_string(),
                Some(pb::stream_events_response::Kind::Gap(g)) => {
                    format!("gap{}-{}", g.after_offset, g.first_retained_offset)
                }
                _ => "?".into(),
            })
            .collect()
    }

    /// Every read until none remains.
    async fn all(
        blobs: &BlobStore,
        session: &str,
        archive: &EventArchive,
        mut after: u64,
        before: u64,
    ) -> Result<Vec<pb::StreamEventsResponse>, Status> {
        let mut out = Vec::new();
        loop {
            let (got, more) = read(blobs, session, archive, &mut after, before).await?;
            out.extend(got);
            if !more {
                return Ok(out);
            }
        }
    }

    async fn all_of(
        blobs: &BlobStore,
        archive: &EventArchive,
        after: u64,
        before: u64,
    ) -> Vec<pb::StreamEventsResponse> {
        all(blobs, "s", archive, after, before).await.unwrap()
    }

    #[tokio::test]
    async fn a_long_archive_is_read_in_bounded_steps() {
        let blobs = BlobStore::open("memory://").unwrap();
        let per = 1000u64;
        let ranges: Vec<(u64, u64)> = (0..10).map(|c| (c * per + 1, (c + 1) * per)).collect();
        let archive = chain(&blobs, &ranges).await;
        let mut after = 0;
        let mut reads = 0;
        let mut seen = 0;
        loop {
            let (got, more) = read(&blobs, "s", &archive, &mut after, 10 * per + 1)
                .await
                .unwrap();
            reads += 1;
            assert!(
                got.len() <= MAX_EVENTS_PER_READ + per as usize,
                "{}",
                got.len()
            );
            seen += got.len();
            if !more {
                break;
            }
        }
        assert_eq!((seen, after), (10_000, 10 * per));
        assert!(reads >= 2, "{reads}");
    }

    #[tokio::test]
    async fn replays_across_chunks_from_any_offset() {
        let blobs = BlobStore::open("memory://").unwrap();
        let archive = chain(&blobs, &[(1, 3), (4, 6), (7, 9)]).await;
        let all = all(&blobs, "s", &archive, 0, 10).await.unwrap();
        assert_eq!(offsets(&all), ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        let mid = all_of(&blobs, &archive, 4, 8).await;
        assert_eq!(offsets(&mid), ["5", "6", "7"]);
        // The window starts later than the archive reaches: a gap.
        let short = all_of(&blobs, &archive, 7, 12).await;
        assert_eq!(offsets(&short), ["8", "9", "gap9-12"]);
    }

    #[tokio::test]
    async fn events_dropped_before_archiving_are_a_gap() {
        let blobs = BlobStore::open("memory://").unwrap();
        // The window dropped 1..=4 before the first chunk was written.
        let archive = chain(&blobs, &[(5, 6), (7, 8)]).await;
        let out = all_of(&blobs, &archive, 0, 9).await;
        assert_eq!(offsets(&out), ["gap0-5", "5", "6", "7", "8"]);
    }

    #[tokio::test]
    async fn another_sessions_chunk_is_refused() {
        let blobs = BlobStore::open("memory://").unwrap();
        let archive = chain(&blobs, &[(1, 2)]).await;
        let e = all(&blobs, "other", &archive, 0, 3).await.unwrap_err();
        assert!(e.message().contains("another session"), "{e:?}");
    }
}
