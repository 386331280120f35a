//! Free blocks and lists of them.
//!
//! A free block's first word is the link to the next free block: the lists of the thread
//! caches, of the central transfer caches and of the pools are all intrusive and cost no
//! memory of their own. A [`Batch`] is such a list with its length, the unit in which
//! blocks travel between a thread cache and the central lists.
//!
//! The link is read and written only through [`Block::next`] and [`Block::set_next`], which
//! tell the sanitizers (`sanitizer.rs`) that the allocator, not the program, touches a free
//! block.

use crate::sanitizer;
use core::ptr;

/// The first word of a free block.
#[repr(C)]
pub(crate) struct Block {
    next: *mut Block,
}

impl Block {
    /// The link of the free block at `block`.
    ///
    /// # Safety
    /// `block` is a free block of ours whose link was written.
    #[inline(always)]
    pub(crate) unsafe fn next(block: *mut Block) -> *mut Block {
        // SAFETY: the block is free and ours (caller): its first word is the link, which we
        // may open to read.
        unsafe {
            sanitizer::open_link(block as *mut u8);
            let next = (*block).next;
            sanitizer::close_link(block as *mut u8);
            next
        }
    }

    /// Sets the link of the free block at `block` to `next`.
    ///
    /// # Safety
    /// `block` is a free block of ours.
    #[inline(always)]
    pub(crate) unsafe fn set_next(block: *mut Block, next: *mut Block) {
        // SAFETY: the block is free and ours (caller): its first word is ours to write.
        unsafe {
            sanitizer::open_link_for_write(block as *mut u8);
            (*block).next = next;
            sanitizer::close_link(block as *mut u8);
        }
    }
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
        unsafe { Block::set_next(block, self.head) };
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
            self.head = unsafe { Block::next(block) };
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
            last = unsafe { Block::next(last) };
        }
        // SAFETY: `last` is the n-th block; cutting after it leaves two valid lists.
        unsafe {
            self.head = Block::next(last);
            Block::set_next(last, ptr::null_mut());
        }
        self.count -= n;
        Batch {
            head: front,
            count: n,
        }
    }
}
