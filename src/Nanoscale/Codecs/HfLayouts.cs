using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// Two Hugging Face layouts of 4-bit weights read as encoded tensors, zero-copy (docs/hf-layouts.md):
/// <list type="bullet">
/// <item><b>hf-mxfp4</b> (transformers' MXFP4, as GPT-OSS stores it): <c>NAME_blocks</c> U8 <c>[rows, cols/32, 16]</c>
/// (element 2i in the low nibble) and <c>NAME_scales</c> U8 <c>[rows, cols/32]</c> (E8M0) — byte for byte our
/// <c>mxfp4</c> blocks and scales, so <c>NAME</c> reads as <c>mxfp4</c>.</item>
/// <item><b>ct-nvfp4</b> (compressed-tensors' <c>nvfp4-pack-quantized</c>, which vLLM and transformers load):
/// <c>P.weight_packed</c> U8 <c>[rows, cols/2]</c>, <c>P.weight_scale</c> F8_E4M3 <c>[rows, cols/16]</c> and
/// <c>P.weight_global_scale</c> F32 <c>[1]</c> — our NVFP4 blocks and scales, with the global scale g = 1/s_t, so
/// <c>P.weight</c> reads as <c>nvfp4:global=divisor</c> (elements × s_b/g, as that library dequantizes).</item>
/// </list>
/// The container is seen through a view that names those arrays as an encoded tensor's parts
/// (<c>NAME.blocks</c>, <c>NAME.scales</c>, <c>NAME.tensor_data</c>); every other tensor passes through. A weight
/// decodes to BF16 (MXFP4: every value is one) or F32 (NVFP4's s_b/g is any float) when decompressed.
/// </summary>
internal static class HfLayouts
{
    public const string Mxfp4Layout = "hf-mxfp4";
    public const string Nvfp4Layout = "ct-nvfp4";

    /// <summary>The codec spec an hf-mxfp4 tensor reads as.</summary>
    public const string Mxfp4Spec = "mxfp4";

    /// <summary>The codec spec a ct-nvfp4 tensor reads as.</summary>
    public const string Nvfp4Spec = "nvfp4:global=divisor";

    /// <summary>The stored names of one layout's arrays for the weight <paramref name="name"/> (ending in <c>.weight</c>
    /// for ct-nvfp4), by part.</summary>
    public static IReadOnlyList<(string Part, string Stored)> PartNames(string layout, string name) => layout switch
    {
        Mxfp4Layout => [("blocks", name + "_blocks"), ("scales", name + "_scales")],
        Nvfp4Layout when name.EndsWith(".weight", StringComparison.Ordinal) =>
            [("blocks", name + "_packed"), ("scales", name + "_scale"), ("tensor_data", name + "_global_scale")],
        Nvfp4Layout => throw new ArgumentException($"{name}: the compressed-tensors layout names a module's weight (NAME.weight)"),
        _ => throw new ArgumentException($"unknown layout {layout}"),
    };

    /// <summary>
    /// When <paramref name="container"/> holds arrays of either layout: the view that names them as parts, and one
    /// entry per weight; otherwise null. Shapes are checked here (a located error for arrays that claim a layout but do
    /// not fit it); sizes are checked again by the block decoder.
    /// </summary>
    public static (ICheckpoint View, List<KeyValuePair<string, CompressedLayout.Entry>> Entries)? Detect(ICheckpoint container)
    {
        var byName = container.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var entries = new List<KeyValuePair<string, CompressedLayout.Entry>>();
        var renamed = new Dictionary<string, string>(StringComparer.Ordinal); // stored name → part name
        foreach (var t in container.Tensors)
        {
            if (t.Name.EndsWith("_blocks", StringComparison.Ordinal) && byName.TryGetValue(t.Name[..^7] + "_scales", out var scales)
                && t.DType == DType.U8 && scales.DType == DType.U8)
            {
                string name = t.Name[..^7];
                if (t.Shape.Length < 2 || t.Shape[^1] != 16 || !scales.Shape.SequenceEqual(t.Shape[..^1]))
                    throw new CheckpointFormatException(container.Path, t.Name, t.FileOffset,
                        $"an MXFP4 blocks array must be [..., groups, 16] beside scales [..., groups]; found {t.ShapeText} and {scales.ShapeText}");
                long[] shape = [.. t.Shape[..^2], t.Shape[^2] * 32];
                Add(Mxfp4Layout, name, Mxfp4Spec, shape, DType.BF16); // E2M1 × 2^k: every value a BF16
            }
            else if (t.Name.EndsWith(".weight_packed", StringComparison.Ordinal) && t.DType == DType.U8)
            {
                string name = t.Name[..^"_packed".Length];
                if (!byName.TryGetValue(name + "_scale", out var scale) || !byName.TryGetValue(name + "_global_scale", out var global))
                    throw new CheckpointFormatException(container.Path, t.Name, t.FileOffset,
                        $"a compressed-tensors packed weight needs {name}_scale and {name}_global_scale beside it");
                if (t.Shape.Length != 2 || scale.DType != DType.F8_E4M3 || scale.Shape.Length != 2 || scale.Shape[0] != t.Shape[0]
                    || scale.Shape[1] * 8 != t.Shape[1] || global.DType != DType.F32 || global.ElementCount != 1)
                    throw new CheckpointFormatException(container.Path, t.Name, t.FileOffset,
                        $"NVFP4 (nvfp4-pack-quantized) needs weight_packed U8 [rows, cols/2], weight_scale F8_E4M3 [rows, cols/16] " +
                        $"and weight_global_scale F32 [1]; found {t.DType.Name()} {t.ShapeText}, {scale.DType.Name()} {scale.ShapeText}, " +
                        $"{global.DType.Name()} {global.ShapeText}");
                Add(Nvfp4Layout, name, Nvfp4Spec, [t.Shape[0], t.Shape[1] * 2], DType.F32); // × s_b/g: any float
            }
        }
        if (entries.Count == 0) return null;
        return (new RenamedCheckpoint(container, renamed), entries);

        void Add(string layout, string name, string spec, long[] shape, DType dtype)
        {
            var parts = PartNames(layout, name);
            foreach (var (part, stored) in parts) renamed[stored] = $"{name}.{part}";
            entries.Add(new(name, new CompressedLayout.Entry(spec, dtype, shape, [.. parts.Select(p => p.Part)], new Dictionary<string, string>())));
        }
    }

    /// <summary>A checkpoint whose arrays are seen under other names (the layout's parts); everything else as stored.</summary>
    private sealed class RenamedCheckpoint : ICheckpoint
    {
        private readonly ICheckpoint _inner;
        private readonly Dictionary<string, (TensorInfo Outer, TensorInfo Inner)> _byOuter = new(StringComparer.Ordinal);
        private readonly Dictionary<TensorInfo, TensorInfo> _toInner = new(ReferenceEqualityComparer.Instance);

        public RenamedCheckpoint(ICheckpoint inner, IReadOnlyDictionary<string, string> renamed)
        {
            _inner = inner;
            var tensors = new List<TensorInfo>();
            foreach (var t in inner.Tensors)
            {
                var outer = renamed.TryGetValue(t.Name, out var name) ? t with { Name = name } : t;
                tensors.Add(outer);
                _byOuter[outer.Name] = (outer, t);
                _toInner[outer] = t;
            }
            Tensors = tensors;
        }

        public string Path => _inner.Path;
        public IReadOnlyList<string> Files => _inner.Files;
        public CheckpointKind Kind => _inner.Kind;
        public IReadOnlyList<TensorInfo> Tensors { get; }
        public IReadOnlyList<KeyValuePair<string, string>> Metadata => _inner.Metadata;
        public ModelConfig? Config => _inner.Config;

        public TensorInfo? Find(string name) => _byOuter.TryGetValue(name, out var pair) ? pair.Outer : null;

        public TensorView Map(TensorInfo tensor) => _toInner.TryGetValue(tensor, out var inner)
            ? _inner.Map(inner)
            : throw new ArgumentException($"{tensor.Name} is not a tensor of {Path}");

        public IntegrityReport Verify(CancellationToken cancellationToken = default) => _inner.Verify(cancellationToken);

        public void Dispose() => _inner.Dispose();
    }
}
