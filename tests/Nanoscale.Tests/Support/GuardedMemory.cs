using System.Runtime.InteropServices;

namespace Nanoscale.Tests.Support;

/// <summary>
/// Native bytes with an inaccessible page right before and right after them (Linux: <c>mmap</c> + <c>mprotect</c>),
/// so a kernel that reads one byte outside its rows faults instead of reading a neighbour. <see cref="AtStart"/> puts
/// the bytes right after the first guard page, <see cref="AtEnd"/> right before the last one.
/// </summary>
internal sealed unsafe class GuardedMemory : IDisposable
{
    private const int ProtNone = 0, ProtReadWrite = 3, MapPrivateAnonymous = 0x02 | 0x20;
    private readonly byte* _mapping;
    private readonly nuint _mappedBytes;

    public static bool IsSupported => OperatingSystem.IsLinux();

    /// <summary>The first of the <see cref="Length"/> usable bytes.</summary>
    public byte* Start { get; }

    public int Length { get; }

    private GuardedMemory(int length, bool atEnd)
    {
        nuint page = (nuint)Environment.SystemPageSize;
        nuint data = ((nuint)length + page - 1) / page * page;
        _mappedBytes = data + 2 * page;
        _mapping = (byte*)Mmap(null, _mappedBytes, ProtReadWrite, MapPrivateAnonymous, -1, 0);
        if (_mapping == (byte*)-1) throw new InvalidOperationException($"mmap of {_mappedBytes} bytes failed: errno {Marshal.GetLastPInvokeError()}");
        if (Mprotect(_mapping, page, ProtNone) != 0 || Mprotect(_mapping + page + data, page, ProtNone) != 0)
            throw new InvalidOperationException($"mprotect failed: errno {Marshal.GetLastPInvokeError()}");
        Length = length;
        Start = atEnd ? _mapping + page + data - (nuint)length : _mapping + page;
    }

    public static GuardedMemory AtStart(int length) => new(length, atEnd: false);

    public static GuardedMemory AtEnd(int length) => new(length, atEnd: true);

    public Span<byte> Bytes => new(Start, Length);

    public void Dispose() => Munmap(_mapping, _mappedBytes);

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static extern int Mprotect(void* address, nuint length, int protection);

    [DllImport("libc", EntryPoint = "munmap")]
    private static extern int Munmap(void* address, nuint length);
}
