using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// A checkpoint seen as its logical tensors: plain tensors as stored, encoded tensors through their codec.
/// Works on plain checkpoints too (then every tensor is plain), so callers need not care which they have.
/// </summary>
public sealed class LogicalCheckpoint : IDisposable
{
    private readonly Dictionary<string, StoredTensor> _encoded;

    /// <summary>A logical tensor: either <see cref="Plain"/> or <see cref="Encoded"/> is set.</summary>
    public sealed record Logical(string Name, DType DType, long[] Shape, TensorInfo? Plain, StoredTensor? Encoded, long StoredBytes)
    {
        public long ElementCount => TensorShape.ElementCount(Shape);
    }

    private LogicalCheckpoint(ICheckpoint container, List<Logical> tensors, Dictionary<string, StoredTensor> encoded, ModelConfig? config)
    {
        Container = container;
        Tensors = tensors;
        _encoded = encoded;
        Config = config;
    }

    public ICheckpoint Container { get; }

    public IReadOnlyList<Logical> Tensors { get; }

    public ModelConfig? Config { get; }

    public bool IsCompressed => _encoded.Count > 0;

    /// <summary>The source's metadata without Nanoscale's own keys.</summary>
    public IEnumerable<KeyValuePair<string, string>> SourceMetadata =>
        Container.Metadata.Where(m => !m.Key.StartsWith("nanoscale.", StringComparison.Ordinal));

    public string? Format => Container.Metadata.FirstOrDefault(m => m.Key == CompressedLayout.FormatKey).Value;

    public Logical? Find(string name) => Tensors.FirstOrDefault(t => t.Name == name);

    public static LogicalCheckpoint Open(string path) => Wrap(CheckpointLoader.Open(path));

    /// <summary>Takes ownership of <paramref name="container"/>.</summary>
    public static LogicalCheckpoint Wrap(ICheckpoint container)
    {
        try
        {
            List<KeyValuePair<string, CompressedLayout.Entry>> entries;
            (container, entries) = Layout(container); // a view that owns the container, for a Hugging Face layout
            var encoded = new Dictionary<string, StoredTensor>(StringComparer.Ordinal);
            var partOwner = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (name, e) in entries)
            {
                try { CodecRegistry.CreateForReading(e.Codec); }
                catch (Formats.FormatSpecException error)
                {
                    throw new CheckpointFormatException(container.Path, $"__metadata__.{CompressedLayout.TensorsKey}.{name}.codec", null,
                        $"unknown or malformed codec ({error.Message})", error);
                }
                var stored = new StoredTensor(name, e.DType, e.Shape, e.Codec, e.Parameters, container);
                if (stored.Rows > int.MaxValue || stored.Columns > int.MaxValue)
                    throw new CheckpointFormatException(container.Path, $"__metadata__.{CompressedLayout.TensorsKey}.{name}.shape", null,
                        $"shape {TensorShape.Text(e.Shape)} has more than 2^31 − 1 rows or columns, which no decoder reads");
                foreach (var part in e.Parts)
                {
                    stored.Part(part); // throws, naming the part, when it is missing
                    partOwner[$"{name}.{part}"] = name;
                }
                encoded[name] = stored;
            }

            // Logical order follows the container: an encoded tensor appears where its first part is stored.
            var tensors = new List<Logical>();
            var emitted = new HashSet<string>(StringComparer.Ordinal);
            foreach (var t in container.Tensors)
            {
                // A stored array named like a part of an encoded tensor but missing from its entry would be ignored by
                // every decoder: the table and the parts disagree.
                int dot = t.Name.LastIndexOf('.');
                for (; dot > 0 && !partOwner.ContainsKey(t.Name); dot = t.Name.LastIndexOf('.', dot - 1))
                    if (encoded.ContainsKey(t.Name[..dot]))
                        throw new CheckpointFormatException(container.Path, t.Name, t.FileOffset,
                            $"stored as a part of the encoded tensor {t.Name[..dot]}, but its entry does not list it");
                if (partOwner.TryGetValue(t.Name, out var owner))
                {
                    if (!emitted.Add(owner)) continue;
                    var stored = encoded[owner];
                    var parts = entries.First(x => x.Key == owner).Value.Parts;
                    tensors.Add(new Logical(owner, stored.DType, stored.Shape, null, stored, stored.StoredBytes(parts)));
                }
                else
                {
                    tensors.Add(new Logical(t.Name, t.DType, t.Shape, t, null, t.ByteLength));
                }
            }
            var config = CompressedLayout.ReadConfig(container) ?? container.Config;
            return new LogicalCheckpoint(container, tensors, encoded, config);
        }
        catch
        {
            container.Dispose();
            throw;
        }
    }

    /// <summary>The encoded tensors of <paramref name="container"/>, whichever way they are stored: our container's
    /// table, a GGUF file's ggml blocks, or a Hugging Face layout (<see cref="HfLayouts"/>, whose arrays are then seen
    /// through the returned view, which owns the container); an empty list for a plain checkpoint.</summary>
    internal static (ICheckpoint Container, List<KeyValuePair<string, CompressedLayout.Entry>> Entries) Layout(ICheckpoint container)
    {
        var entries = CompressedLayout.ReadEntries(container) ?? GgmlEntries(container);
        return entries.Count == 0 && HfLayouts.Detect(container) is { } hf ? (hf.View, hf.Entries) : (container, entries);
    }

    /// <summary>A GGUF file's tensors in ggml block types as encoded tensors of the ggml format of the same name (their
    /// one part is <c>NAME.blocks</c>, the file's own bytes); no entries for any other checkpoint.</summary>
    internal static List<KeyValuePair<string, CompressedLayout.Entry>> GgmlEntries(ICheckpoint container) =>
        container is GgufFile gguf
            ? [.. gguf.Quantized.Select(q => new KeyValuePair<string, CompressedLayout.Entry>(q.Name,
                new CompressedLayout.Entry(q.Type == GgmlType.Mxfp4 ? "ggml-mxfp4" : q.Type.Name, DType.F32, q.Shape, [BlockLayout.Blocks],
                    new Dictionary<string, string>())))]
            : [];

    /// <summary>A decoder for an encoded tensor (its codec is created from the stored spec string).</summary>
    public ITensorDecoder OpenDecoder(Logical tensor)
    {
        var stored = tensor.Encoded ?? throw new ArgumentException($"{tensor.Name} is stored plain");
        return CodecRegistry.CreateForReading(stored.Spec).OpenDecoder(stored);
    }

    /// <summary>Reads every tensor once, as <c>eval</c> or <c>decompress</c> first would: each encoded tensor decoded
    /// whole, each plain one mapped (which checks it against the integrity record). For damage tests and benchmarks.</summary>
    /// <exception cref="IO.CheckpointFormatException">A tensor is damaged.</exception>
    internal void ReadEveryTensor()
    {
        foreach (var tensor in Tensors)
        {
            if (tensor.Encoded is { } stored)
            {
                using var decoder = OpenDecoder(tensor);
                decoder.ReadRows(0, (int)stored.Rows, new float[tensor.ElementCount]);
            }
            else
            {
                using var view = Container.Map(tensor.Plain!);
            }
        }
    }

    public void Dispose() => Container.Dispose();
}
