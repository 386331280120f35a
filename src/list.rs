//! The one intrusive doubly linked list of the allocator: arenas in their occupancy lists
//! (`arena.rs`), pools in their class's fullness bins (`central.rs`), thread caches in the
//! registry (`thread_cache.rs`). A node carries its own [`Links`], so a list costs no
//! memory and linking or unlinking is O(1) with no allocation.
//!
//! Nodes live in memory of ours (arena headers, thread-local blocks) and are handled as raw
//! pointers; a list is guarded by its owner's lock, which the callers' `unsafe` contracts
//! state. All-zero bytes are an empty list and an unlinked node, as fresh arena headers and
//! thread-local blocks are.

use core::ptr;

/// The links of a node: its neighbours in the one list it is in (null at the ends).
pub(crate) struct Links<T> {
    prev: *mut T,
    next: *mut T,
}

impl<T> Links<T> {
    /// The links of a node in no list.
    pub(crate) const fn new() -> Links<T> {
        Links {
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
        }
    }
}

/// A type whose nodes embed [`Links`].
///
/// # Safety
/// `links(node)` points to the same `Links` inside `*node` every time, for a live `node`.
pub(crate) unsafe trait Linked: Sized {
    /// The links embedded in `node`.
    fn links(node: *mut Self) -> *mut Links<Self>;
}

/// A list of nodes of `T`, newest first.
pub(crate) struct List<T> {
    head: *mut T,
}

// SAFETY: a list is a pointer to nodes in memory of ours, which no thread owns; whoever
// sends or shares it (inside a `Mutex`) touches the nodes only under that lock.
unsafe impl<T> Send for List<T> {}

impl<T> List<T> {
    /// An empty list.
    pub(crate) const fn new() -> List<T> {
        List {
            head: ptr::null_mut(),
        }
    }

    /// The first node, or null.
    #[inline]
    pub(crate) fn first(&self) -> *mut T {
        self.head
    }

    /// Whether the list has no node.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }
}

impl<T: Linked> List<T> {
    /// Links `node` in at the front.
    ///
    /// # Safety
    /// `node` is live and in no list; the nodes of this list are live.
    pub(crate) unsafe fn push_front(&mut self, node: *mut T) {
        // SAFETY: by the caller's promises every node touched is live.
        unsafe {
            let links = T::links(node);
            (*links).prev = ptr::null_mut();
            (*links).next = self.head;
            if !self.head.is_null() {
                (*T::links(self.head)).prev = node;
            }
        }
        self.head = node;
    }

    /// Unlinks `node`.
    ///
    /// # Safety
    /// `node` is live and in this list; the nodes of this list are live.
    pub(crate) unsafe fn remove(&mut self, node: *mut T) {
        // SAFETY: by the caller's promises every node touched is live.
        unsafe {
            let links = T::links(node);
            let (prev, next) = ((*links).prev, (*links).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*T::links(prev)).next = next;
            }
            if !next.is_null() {
                (*T::links(next)).prev = prev;
            }
            (*links).prev = ptr::null_mut();
            (*links).next = ptr::null_mut();
        }
    }

    /// Makes the list hold just `node` (null: nothing), whatever it held: for a forked
    /// child, where the other nodes belong to threads that no longer exist.
    ///
    /// # Safety
    /// `node` is null or live and in no other list.
    pub(crate) unsafe fn reset_to(&mut self, node: *mut T) {
        if !node.is_null() {
            // SAFETY: by the caller's promise.
            unsafe { *T::links(node) = Links::new() };
        }
        self.head = node;
    }

    /// The node after `node` in its list, or null.
    ///
    /// # Safety
    /// `node` is live and in a list.
    #[inline]
    pub(crate) unsafe fn next(node: *mut T) -> *mut T {
        // SAFETY: by the caller's promise.
        unsafe { (*T::links(node)).next }
    }

    /// The node before `node` in its list, or null (for consistency checks).
    ///
    /// # Safety
    /// `node` is live and in a list.
    #[cfg(all(test, loom))]
    pub(crate) unsafe fn prev(node: *mut T) -> *mut T {
        // SAFETY: by the caller's promise.
        unsafe { (*T::links(node)).prev }
    }

    /// The nodes, first to last. The next node is read before the current one is yielded,
    /// so the caller may unlink the node it was given.
    ///
    /// # Safety
    /// Every node of the list stays live, and no node after the current one is unlinked,
    /// while the iterator is used.
    pub(crate) unsafe fn iter(&self) -> impl Iterator<Item = *mut T> {
        let mut node = self.head;
        core::iter::from_fn(move || {
            if node.is_null() {
                return None;
            }
            let current = node;
            // SAFETY: by the caller's promise `current` is live and in this list.
            node = unsafe { Self::next(current) };
            Some(current)
        })
    }
}
