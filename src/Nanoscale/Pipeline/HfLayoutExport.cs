using System.Diagnostics;
using System.Text.Json.Nodes;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>Options of <see cref="HfLayoutExport.Export"/>.</summary>
public sealed record HfLayoutOptions
{
    /// <summary><c>hf-mxfp4</c> (transformers' MXFP4 blocks and scales) or <c>ct-nvfp4</c> (compressed-tensors'
    /// <c>nvfp4-pack-quantized</c>).</summary>
    public string Layout { get; init; } = HfLayouts.Nvfp4Layout;

    public const string LayoutName = nameof(HfLayoutOptions) + "." + nameof(Layout);

    /// <summary>The layouts there are.</summary>
    public static IReadOnlyList<string> Layouts { get; } = [HfLayouts.Mxfp4Layout, HfLayouts.Nvfp4Layout];

    /// <summary>Regex of extra tensor names to quantize (by default linear weights only; embeddings, head and norms
    /// keep their precision, and the config lists them as not converted).</summary>
    public string? Include { get; init; }

    /// <summary>The tokenizer to copy; null copies the files beside the model.</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Allow the output inside the input's model folder (its own files stay refused).</summary>
    public bool Force { get; init; }

    public Parallelism Parallelism { get; init; }

    public long MaxShardBytes { get; init; } = CheckpointWriter.DefaultMaxShardBytes;
}

/// <summary>What <see cref="HfLayoutExport.Export"/> wrote: the quantized weights and the tensors kept as they were (with why).</summary>
public sealed record HfLayoutReport(string Output, string Layout, long Bytes, IReadOnlyList<string> Quantized,
    IReadOnlyList<(string Name, string Reason)> Kept, TimeSpan Elapsed);

/// <summary>
/// Writes a Hugging Face model folder whose linear weights are 4-bit in a layout other tools load (docs/hf-layouts.md):
/// <c>hf-mxfp4</c> — our MXFP4 codes and E8M0 scales as transformers' <c>NAME_blocks</c> U8 [rows, cols/32, 16] and
/// <c>NAME_scales</c> U8 [rows, cols/32], <c>quantization_config = {quant_method: mxfp4, modules_to_not_convert}</c>;
/// <c>ct-nvfp4</c> — NVFP4 in compressed-tensors' convention (<c>nvfp4:global=divisor</c>: global scale g = 2688/amax,
/// elements × s_b/g) as its <c>P.weight_packed</c>, <c>P.weight_scale</c> (F8_E4M3) and <c>P.weight_global_scale</c> (F32 [1]),
/// with its <c>nvfp4-pack-quantized</c> quantization_config (weights only). Everything else is copied unchanged; the
/// folder is staged and renamed whole, tensors streamed one at a time. Nanoscale reads both layouts back
/// (<c>HfLayouts</c>), and <c>tools/hf_layouts_reference.py</c> decodes them as those projects' code does.
/// </summary>
public static class HfLayoutExport
{
    /// <exception cref="NanoscaleException">Bad input or options; an output that would overwrite the input.</exception>
    public static HfLayoutReport Export(string modelPath, string output, HfLayoutOptions? options = null,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new HfLayoutOptions();
        string layout = options.Layout.Trim().ToLowerInvariant();
        if (!HfLayoutOptions.Layouts.Contains(layout))
            throw new InvalidOptionException(HfLayoutOptions.LayoutName, $"'{options.Layout}' is not a layout ({string.Join(", ", HfLayoutOptions.Layouts)})");
        if (!ModelFolder.IsFolder(output))
            throw new InvalidOptionException("output", $"{output}: a {layout} export is a model folder (config.json beside the weights), not one .safetensors file");
        var clock = Stopwatch.StartNew();
        using var source = CheckpointLoader.Open(modelPath);
        output = ModelFolder.CheckOutput(output, source, null, options.Force);
        if (CompressedLayout.ReadEntries(source) is { Count: > 0 } || HfLayouts.Detect(source) is not null)
            throw new InputException($"{source.Path} is already a compressed checkpoint; decompress it first");
        bool mx = layout == HfLayouts.Mxfp4Layout;
        var codec = CodecRegistry.Create(mx ? HfLayouts.Mxfp4Spec : HfLayouts.Nvfp4Spec);
        int block = mx ? 32 : 16;
        var selection = TensorSelection.For(codec, options.Include);
        var names = source.Tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var quantized = new List<string>();
        var kept = new List<(string, string)>();
        using var writer = ModelFolder.Writer(output, options.MaxShardBytes);
        long total = source.Tensors.Sum(t => t.ByteLength), done = 0;
        foreach (var tensor in source.Tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new PipelineProgress("export", tensor.Name, done, total));
            string? why = !selection.Selects(tensor) ? "not selected (embeddings, head, norms and non-matrices keep their precision)"
                : tensor.Shape.Length != 2 ? "not a matrix"
                : tensor.Columns % block != 0 ? $"rows of {tensor.Columns} are not whole blocks of {block}"
                : !mx && !tensor.Name.EndsWith(".weight", StringComparison.Ordinal) ? "not a module's .weight (the layout names P.weight_packed)"
                : null;
            if (why is not null)
            {
                writer.Add(tensor.Name, tensor.DType, tensor.Shape, stream => SafetensorsWriter.CopyTensor(source, tensor, stream));
                if (tensor.Shape.Length == 2) kept.Add((tensor.Name, why));
            }
            else
            {
                EncodedTensor encoded;
                using (var view = source.Map(tensor))
                    encoded = codec.Encode(view, new EncodeOptions { Parallelism = options.Parallelism }, cancellationToken);
                var parts = HfArrays(layout, tensor, encoded);
                foreach (var (name, _, _, _) in parts)
                    if (names.Contains(name))
                        throw new InputException($"{source.Path}: cannot write {tensor.Name} as {layout}: the model already has a tensor named {name}");
                writer.AddGroup([.. parts.Select(p => new CheckpointWriter.Part(p.Item1, p.Item2, p.Item3, p.Item4))]);
                quantized.Add(tensor.Name);
            }
            done += tensor.ByteLength;
        }
        if (quantized.Count == 0)
            throw new InputException($"{source.Path}: no tensor can be written as {layout} (every matrix was kept: {string.Join("; ", kept.Take(3).Select(k => $"{k.Item1}: {k.Item2}"))})");
        ModelFolder.AddCompanions(writer, source, source.Config, ModelFolder.MainDType(source.Tensors.Select(t => (t.DType, t.ElementCount))),
            QuantizationConfig(layout, kept.Select(k => k.Item1)), options.TokenizerPath);
        progress?.Report(new PipelineProgress("write", null, total, total));
        writer.Commit(cancellationToken);
        return new HfLayoutReport(output, layout, ModelFolder.SizeOf(output), quantized, kept, clock.Elapsed);
    }

    /// <summary>The layout's arrays for one encoded weight: names, dtypes and shapes as the other project stores them,
    /// bytes as our codec wrote them (<c>mxfp4</c>, or <c>nvfp4:global=divisor</c> whose tensor data is the global scale).</summary>
    internal static List<(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data)> HfArrays(string layout, TensorInfo tensor, EncodedTensor encoded)
    {
        ReadOnlyMemory<byte> Part(string suffix) => encoded.Parts.First(p => p.Suffix == suffix).Data;
        long rows = tensor.Rows, cols = tensor.Columns;
        var names = HfLayouts.PartNames(layout, tensor.Name).ToDictionary(p => p.Part, p => p.Stored);
        if (layout == HfLayouts.Mxfp4Layout)
            return
            [
                (names["blocks"], DType.U8, [rows, cols / 32, 16], Part("blocks")),
                (names["scales"], DType.U8, [rows, cols / 32], Part("scales")),
            ];
        return
        [
            (names["blocks"], DType.U8, [rows, cols / 2], Part("blocks")),
            (names["scales"], DType.F8_E4M3, [rows, cols / 16], Part("scales")),
            (names["tensor_data"], DType.F32, [1], Part("tensor_data")),
        ];
    }

    /// <summary>config.json's <c>quantization_config</c> for the layout; <paramref name="kept"/> are the matrices left in
    /// their original dtype, by tensor name.</summary>
    internal static JsonObject QuantizationConfig(string layout, IEnumerable<string> kept)
    {
        static string Module(string name) => name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;
        var modules = new JsonArray([.. kept.Select(k => (JsonNode?)JsonValue.Create(Module(k)))]);
        if (layout == HfLayouts.Mxfp4Layout)
            return new JsonObject { ["quant_method"] = "mxfp4", ["modules_to_not_convert"] = modules };
        return new JsonObject
        {
            ["quant_method"] = "compressed-tensors",
            ["format"] = "nvfp4-pack-quantized",
            ["quantization_status"] = "compressed",
            ["config_groups"] = new JsonObject
            {
                ["group_0"] = new JsonObject
                {
                    ["targets"] = new JsonArray("Linear"),
                    ["weights"] = new JsonObject
                    {
                        ["num_bits"] = 4, ["type"] = "float", ["symmetric"] = true, ["strategy"] = "tensor_group",
                        ["group_size"] = 16, ["dynamic"] = false,
                    },
                    ["input_activations"] = null,
                    ["output_activations"] = null,
                },
            },
            ["ignore"] = modules,
            ["kv_cache_scheme"] = null,
        };
    }
}
