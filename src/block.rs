//! Free blocks and lists of them.
//!
//! A free block's first word is the link to the next free block: the lists of the thread
//! caches, of the central transfer caches and of the pools are all intrusive and cost no
//! memory of their own. A [`Batch`] is such a list with its length, the unit in which
//! blocks travel between a thread cache and the central lists.

use core::ptr;

/// The first word of a free block.
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

/// A null-terminated list of free blocks of one size class and its length.
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    pub(crate) head: *mut Block,
    pub(crate) count: u32,
}

impl Batch {
    pub(crate) const EMPTY: Batch = Batch {
        head: ptr::null_mut(),
        count: 0,
    };

    /// Adds `block` at the front.
    ///
    /// # Safety
    /// `block` is a free block of the batch's class that nothing else links to.
    #[inline]
    pub(crate) unsafe fn push(&mut self, block: *mut Block) {
        // SAFETY: the caller hands us the block; its first word is ours to write.
        unsafe { (*block).next = self.head };
        self.head = block;
        self.count += 1;
    }

    /// Removes and returns the front block, or null.
    ///
    /// # Safety
    /// The batch's blocks are valid free blocks (its invariant).
    #[inline]
    pub(crate) unsafe fn pop(&mut self) -> *mut Block {
        let block = self.head;
        if !block.is_null() {
            // SAFETY: a non-null head is a free block whose first word is the link.
            self.head = unsafe { (*block).next };
            self.count -= 1;
        }
        block
    }

    /// Splits off the first `n` blocks (all of them if there are fewer) as a batch of their own.
    ///
    /// # Safety
    /// `count` is the true length of the list.
    pub(crate) unsafe fn split_front(&mut self, n: u32) -> Batch {
        if n >= self.count {
            return core::mem::replace(self, Batch::EMPTY);
        }
        if n == 0 {
            return Batch::EMPTY;
        }
        let front = self.head;
        let mut last = front;
        for _ in 1..n {
            // SAFETY: fewer than `count` links are followed, so each is a block.
            last = unsafe { (*last).next };
        }
        // SAFETY: `last` is the n-th block; cutting after it leaves two valid lists.
        unsafe {
            self.head = (*last).next;
            (*last).next = ptr::null_mut();
        }
        self.count -= n;
        Batch {
            head: front,
            count: n,
        }
    }
}
