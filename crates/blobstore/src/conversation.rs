//! A conversation is a chain of immutable segments in the blob store. Each
//! segment names its predecessor and the digests of the items it adds, so the
//! whole conversation is identified by one digest (its head) and appending is
//! O(new items) — the workflow only ever carries the head.

use serde::{Deserialize, Serialize};

use crate::{BlobError, BlobStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    /// The previous head; `None` for the first segment.
    pub prev: Option<String>,
    /// Item digests, in conversation order.
    pub items: Vec<String>,
}

/// Appends `items` after `head` and returns the new head. With no items the
/// head is returned unchanged.
pub async fn append(
    store: &BlobStore,
    head: Option<&str>,
    items: Vec<String>,
) -> Result<Option<String>, BlobError> {
    if items.is_empty() {
        return Ok(head.map(str::to_string));
    }
    let seg = Segment {
        prev: head.map(str::to_string),
        items,
    };
    Ok(Some(store.put_json(&seg).await?))
}

/// Every item digest of the conversation ending at `head`, oldest first.
pub async fn item_digests(store: &BlobStore, head: Option<&str>) -> Result<Vec<String>, BlobError> {
    let mut segments = Vec::new();
    let mut cur = head.map(str::to_string);
    while let Some(d) = cur {
        let seg: Segment = store.get_json(&d).await?;
        cur = seg.prev.clone();
        segments.push(seg);
    }
    Ok(segments.into_iter().rev().flat_map(|s| s.items).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_and_walk() {
        let store = BlobStore::open("memory://").unwrap();
        let a = store.put(&b"a"[..]).await.unwrap();
        let b = store.put(&b"b"[..]).await.unwrap();
        let c = store.put(&b"c"[..]).await.unwrap();
        assert_eq!(append(&store, None, vec![]).await.unwrap(), None);
        let h1 = append(&store, None, vec![a.clone(), b.clone()])
            .await
            .unwrap();
        let h2 = append(&store, h1.as_deref(), vec![c.clone()])
            .await
            .unwrap();
        assert_eq!(
            item_digests(&store, h2.as_deref()).await.unwrap(),
            vec![a.clone(), b, c.clone()]
        );
        assert_eq!(
            item_digests(&store, None).await.unwrap(),
            Vec::<String>::new()
        );
        // Same content, same head: a retried append is harmless.
        let again = append(&store, h1.as_deref(), vec![c]).await.unwrap();
        assert_eq!(again, h2);
    }
}
