//! Runs one job per item on several threads and hands the results back in the items' order, so a command that
//! checks many files uses every core and still prints exactly what the sequential loop printed.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The number of threads to use when the user did not say: one per core the process may run on.
pub(crate) fn default_jobs() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// `job(item)` for every item, on up to `jobs` threads; the results are in `items`' order whatever order the
/// threads finished in. The queue is a shared index: each thread takes the next item when it is done with one, so
/// a few slow items do not leave the other threads idle (a fixed split into chunks would). With one job, or one
/// item, no thread is started.
pub(crate) fn map_ordered<T, R, F>(items: &[T], jobs: NonZeroUsize, job: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = jobs.get().min(items.len());
    if threads <= 1 {
        return items.iter().map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = job(item);
                    // Each slot is written by exactly one thread; the lock is never contended.
                    *slots[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    // scope() joined every thread (and re-raised a panic of any of them), so every slot is filled.
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was taken by a thread")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn results_keep_the_items_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..1000).collect();
        // Uneven work so that threads finish out of order.
        let work =
            |n: &u64| (0..(n % 7) * 1000).fold(*n, |acc, k| acc.wrapping_mul(31).wrapping_add(k));
        let sequential: Vec<u64> = items.iter().map(work).collect();
        for threads in [1, 2, 3, 8, 2000] {
            assert_eq!(
                map_ordered(&items, jobs(threads), work),
                sequential,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn every_thread_takes_work_from_the_queue() {
        let items: Vec<usize> = (0..64).collect();
        let ids = map_ordered(&items, jobs(4), |_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            std::thread::current().id()
        });
        let mut distinct = ids.clone();
        distinct.sort_by_key(|id| format!("{id:?}"));
        distinct.dedup();
        assert!(distinct.len() > 1, "all 64 items ran on one thread");
        assert!(ids.iter().all(|id| *id != std::thread::current().id()));
    }

    #[test]
    fn no_items_no_results() {
        let items: Vec<u8> = Vec::new();
        assert!(map_ordered(&items, jobs(4), |b| *b).is_empty());
    }
}
