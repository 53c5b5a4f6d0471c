using System.IO.MemoryMappedFiles;

namespace Nanoscale.IO;

/// <summary>A read-only memory mapping of one file, shared by the tensor views cut from it.</summary>
internal sealed class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;

    public MappedFile(string path)
    {
        Path = path;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        Length = stream.Length;
        // An empty file cannot be mapped; callers reject it before asking for tensor bytes.
        if (Length > 0)
            _map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
    }

    public string Path { get; }

    public long Length { get; }

    public TensorView View(TensorInfo tensor) => new(tensor, _map);

    public void Dispose() => _map?.Dispose();
}
