import CLinux

/// Gives the free pages of the heap back to the kernel.
///
/// glibc returns memory to the kernel only from the top of the heap, and only once 128 KiB are
/// free there (M_TRIM_THRESHOLD); freed chunks below a live one stay resident. A worker does its
/// allocating in bursts (a request, a plug that starts) and then idles for hours, so whatever a
/// burst freed would stay in its PSS for the worker's life, once per network. `malloc_trim(0)`
/// also releases the whole free pages inside the heap (madvise), at the cost of one walk of the
/// free lists: microseconds for a worker's heap of a few hundred KiB (docs/benchmarks.md, "Where
/// the memory went").
public enum HeapRelease {
    public static func now() {
        _ = clinux_release_free_heap()
    }
}
