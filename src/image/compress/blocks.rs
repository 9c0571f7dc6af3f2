//! A writer that cuts what it is given into fixed-size blocks, has the
//! pool compress them in parallel, and writes the compressed blocks out in
//! order. A layer of any size keeps every core busy; small layers share
//! the pool with large ones.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};

use super::codec::BlockCodec;
use super::pool::{Permit, Pool};

pub struct BlockEncoder<W: Write> {
    codec: BlockCodec,
    pool: &'static Pool,
    out: W,
    /// The block being filled.
    filling: Vec<u8>,
    /// Blocks handed on, oldest first, written out as they come back.
    pending: VecDeque<Arc<Slot>>,
    /// Most blocks of this layer in flight: one per worker and one more, so
    /// one large layer keeps every worker busy and leaves budget for others.
    max_pending: usize,
    /// Whether any block was compressed: an empty input still makes one (empty) member or frame.
    any: bool,
}

/// Where a block's result arrives.
struct Slot {
    result: Mutex<Option<io::Result<Vec<u8>>>>,
    ready: Condvar,
    /// Given back to the pool when both the job and the encoder are done with the block.
    _permit: Option<Permit>,
}

impl Slot {
    fn new(permit: Option<Permit>) -> Arc<Slot> {
        Arc::new(Slot { result: Mutex::new(None), ready: Condvar::new(), _permit: permit })
    }

    fn set(&self, result: io::Result<Vec<u8>>) {
        *self.result.lock().unwrap() = Some(result);
        self.ready.notify_all();
    }

    fn try_take(&self) -> Option<io::Result<Vec<u8>>> {
        self.result.lock().unwrap().take()
    }

    fn wait(&self) -> io::Result<Vec<u8>> {
        let mut result = self.result.lock().unwrap();
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            result = self.ready.wait(result).unwrap();
        }
    }
}

impl<W: Write> BlockEncoder<W> {
    pub fn new(codec: BlockCodec, pool: &'static Pool, out: W) -> Self {
        BlockEncoder {
            codec,
            pool,
            out,
            filling: pool.buffer(codec.block_size()),
            pending: VecDeque::new(),
            max_pending: pool.threads() + 1,
            any: false,
        }
    }

    /// Compresses what is left and writes everything out; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.filling.is_empty() || !self.any {
            let block = std::mem::take(&mut self.filling);
            self.hand_on(block)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Gives a full block to the pool, or compresses it here when the pool's
    /// budget is all in use by other layers and none of this layer's blocks
    /// is in flight: those layers may be slow to give theirs back (one
    /// streaming to a slow client), and this one still moves on.
    fn hand_on(&mut self, block: Vec<u8>) -> io::Result<()> {
        self.any = true;
        self.write_finished()?;
        loop {
            if self.pending.len() < self.max_pending {
                if let Some(permit) = self.pool.try_reserve() {
                    let slot = Slot::new(Some(permit));
                    let job_slot = Arc::clone(&slot);
                    let (codec, pool) = (self.codec, self.pool);
                    self.pool.spawn(move || {
                        let result = catch_unwind(AssertUnwindSafe(|| compress(codec, pool, block)))
                            .unwrap_or_else(|_| Err(io::Error::other("compressing a block panicked")));
                        job_slot.set(result);
                    });
                    self.pending.push_back(slot);
                    return Ok(());
                }
                if self.pending.is_empty() {
                    let slot = Slot::new(None);
                    slot.set(compress(self.codec, self.pool, block));
                    self.pending.push_back(slot);
                    return Ok(());
                }
            }
            self.write_oldest()?;
        }
    }

    /// Writes out the blocks at the front that are done, without waiting.
    fn write_finished(&mut self) -> io::Result<()> {
        while let Some(slot) = self.pending.front() {
            let Some(result) = slot.try_take() else { break };
            self.pending.pop_front();
            self.write_out(result?)?;
        }
        Ok(())
    }

    fn write_out(&mut self, compressed: Vec<u8>) -> io::Result<()> {
        self.out.write_all(&compressed)?;
        self.pool.give_back(compressed);
        Ok(())
    }

    /// Waits for the oldest block and writes it out. The generator does not
    /// run the pool's queued jobs meanwhile: the pool has a worker per core,
    /// and one more thread compressing only contends with them for the
    /// cores and their caches (compression took some 28% more CPU time so;
    /// a cold zstd generation of bench/'s large closure took 7% longer).
    fn write_oldest(&mut self) -> io::Result<()> {
        let slot = self.pending.pop_front().expect("a block is pending");
        self.write_out(slot.wait()?)
    }
}

/// `block` compressed into a buffer of the pool's; the block's own buffer goes back to it.
fn compress(codec: BlockCodec, pool: &Pool, block: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut compressed = pool.buffer(0);
    codec.compress(&block, &mut compressed)?;
    pool.give_back(block);
    Ok(compressed)
}

impl<W: Write> Write for BlockEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let size = self.codec.block_size();
        let n = buf.len().min(size - self.filling.len());
        self.filling.extend_from_slice(&buf[..n]);
        if self.filling.len() == size {
            let block = std::mem::replace(&mut self.filling, self.pool.buffer(size));
            self.hand_on(block)?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed offsets, so a flush cannot end one early: it
    /// writes out what is done and flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.write_finished()?;
        self.out.flush()
    }
}
