using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>Options of <see cref="GgufExport.Export"/>.</summary>
public sealed record GgufExportOptions
{
    /// <summary>The ggml type of the weight matrices: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or mxfp4.</summary>
    public string Type { get; init; } = "f16";

    public const string TypeName = nameof(GgufExportOptions) + "." + nameof(Type);

    /// <summary>The tokenizer to embed; null finds it beside the model.</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Allow the output inside the input's model folder (its own files stay refused).</summary>
    public bool Force { get; init; }

    public Parallelism Parallelism { get; init; }

    /// <summary>The ggml types a GGUF export writes.</summary>
    public static IReadOnlyList<string> Types { get; } = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4"];
}

/// <summary>One tensor of a GGUF export: its names, the type it was written in, and why, when not the one asked for.</summary>
public sealed record GgufTensorReport(string Name, string GgufName, string Type, long[] Shape, long Bytes, string? Fallback);

/// <summary>What <see cref="GgufExport.Export"/> wrote.</summary>
public sealed record GgufExportReport(string Output, long Bytes, string Type, string Architecture, string Vocabulary,
    string? PreTokenizer, string TokenizerPath, IReadOnlyList<GgufTensorReport> Tensors)
{
    /// <summary>The file whose chat template was written as <c>tokenizer.chat_template</c>, or null when none was found.</summary>
    public string? ChatTemplateFrom { get; init; }

    public IEnumerable<GgufTensorReport> Fallbacks => Tensors.Where(t => t.Fallback is not null);
}

/// <summary>
/// Writes a model as a GGUF file that llama.cpp runs (docs/gguf.md): llama.cpp's llama, qwen2 or qwen3 architecture
/// metadata (every
/// hyperparameter, RoPE base and scaling as a <c>rope_freqs</c> tensor, tied head), the tokenizer embedded
/// (<see cref="GgufVocabulary"/>), and the weights in one ggml type. Norms stay F32 (as llama.cpp's converter keeps
/// them); a matrix whose rows are not whole blocks of 32 is written F16 and reported. Hugging Face q/k projections
/// are permuted to llama.cpp's interleaved rotary pairs (llama2.c and GGUF sources already have them). The source may
/// be plain or compressed: compressed tensors are decoded and re-quantized to the GGUF type; <c>mxfp4</c> is our OCP
/// MXFP4 in ggml's block layout (<c>ggml-mxfp4</c>), so llama.cpp decodes exactly our values. Tensors are streamed
/// one at a time into a temporary file that is renamed when complete.
/// </summary>
public static class GgufExport
{
    /// <exception cref="NanoscaleException">A bad input, type or tokenizer; an output that would overwrite the input.</exception>
    public static GgufExportReport Export(string modelPath, string output, GgufExportOptions? options = null,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new GgufExportOptions();
        string type = options.Type.Trim().ToLowerInvariant();
        if (!GgufExportOptions.Types.Contains(type))
            throw new InvalidOptionException(GgufExportOptions.TypeName, $"'{options.Type}' is not a GGUF export type ({string.Join(", ", GgufExportOptions.Types)})");
        if (!output.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOptionException("output", $"{output}: a GGUF export is written to a file named *.gguf");

        using var input = LogicalCheckpoint.Open(modelPath);
        var config = input.Config ?? throw new CheckpointFormatException(modelPath, "config", null,
            "the checkpoint does not describe a model architecture (no llama2.c header, config.json or nanoscale.config)");
        if (config.Unsupported is { } why) throw new InputException($"{modelPath}: {why}; it cannot be exported to GGUF");
        if (config.AttentionBias && config.QkNorm)
            throw new InputException($"{modelPath}: attention biases together with q/k norms match no llama.cpp architecture GGUF export writes");
        // llama.cpp's architecture: Qwen2/2.5 (q/k/v biases) and Qwen3 (q/k norms) rotate halves (NEOX), as Hugging Face
        // does, so their q/k rows stay as they are; llama rotates interleaved pairs.
        string architecture = config.QkNorm ? "qwen3" : config.AttentionBias ? "qwen2" : "llama";
        output = OutputGuard.Check(output, input.Container, null, options.Force);

        var tokenizerPath = options.TokenizerPath ?? TokenizerLoader.FindBeside(modelPath) ?? FindTokenizerJson(modelPath) ?? throw new InputException(
            $"no tokenizer found beside {modelPath}; GGUF files carry their tokenizer, give one with {ModelLoadOptions.TokenizerPathName}",
            ModelLoadOptions.TokenizerPathName);
        var embedding = input.Find(LlamaTensorNames.Embedding) ?? throw new CheckpointFormatException(modelPath, LlamaTensorNames.Embedding, null, "the model has no token embedding");
        var vocabulary = GgufVocabulary.Read(tokenizerPath, checked((int)embedding.Shape[0]));

        var quantized = GgmlType.FromName(type)!;
        IBlockCodec? codec = quantized.IsQuantized ? CodecRegistry.CreateBlockCodec(type == "mxfp4" ? "ggml-mxfp4" : type) : null;
        var writer = new GgufWriter(output);
        foreach (var (key, value) in Metadata(config, architecture, modelPath, quantized, codec is not null)) writer.AddMetadata(key, value);
        foreach (var (key, value) in vocabulary.Metadata) writer.AddMetadata(key, value);
        // The chat template travels as llama.cpp reads it (llama-server --jinja renders it): the tokenizer's folder
        // first, then the model's.
        var template = new[] { Path.GetDirectoryName(Path.GetFullPath(tokenizerPath)), Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath)) }
            .Where(f => f is not null).Select(f => ChatTemplate.FindText(f!)).FirstOrDefault(t => t is not null);
        if (template is { } t) writer.AddMetadata(ChatTemplate.GgufKey, t.Text);

        var reports = new List<GgufTensorReport>();
        var plan = new List<(LogicalCheckpoint.Logical Tensor, string GgufName, GgmlType Type, int PermuteHeads)>();
        foreach (var tensor in input.Tensors)
        {
            var ggufName = GgufFile.GgufName(tensor.Name) ?? throw new InputException(
                $"{modelPath}: tensor {tensor.Name} has no place in llama.cpp's {architecture} architecture");
            int heads = architecture == "llama" && config.RopeStyle == RopeStyle.Halves
                ? tensor.Name.EndsWith("self_attn.q_proj.weight", StringComparison.Ordinal) ? config.Heads
                : tensor.Name.EndsWith("self_attn.k_proj.weight", StringComparison.Ordinal) ? config.KvHeads : 0
                : 0;
            GgmlType target;
            string? fallback = null;
            if (tensor.Shape.Length == 1) target = GgmlType.F32;
            else if (quantized.RowBytes(tensor.Shape[^1]) is null)
            {
                target = GgmlType.F16;
                fallback = $"rows of {tensor.Shape[^1]} are not whole {type} blocks of {quantized.BlockSize}";
            }
            else target = quantized;
            plan.Add((tensor, ggufName, target, heads));
            long rows = tensor.ElementCount / tensor.Shape[^1];
            reports.Add(new GgufTensorReport(tensor.Name, ggufName, target.Name, tensor.Shape, rows * target.RowBytes(tensor.Shape[^1])!.Value, fallback));
        }
        if ((config.RopeScaling is { } scaling ? RopeFactors(config, scaling) : config.RopeFrequencyFactors) is { } factors)
        {
            writer.AddTensor("rope_freqs.weight", GgmlType.F32, [factors.Length], stream => stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(factors.AsSpan())));
            reports.Add(new GgufTensorReport("(rope_scaling)", "rope_freqs.weight", "f32", [factors.Length], factors.Length * 4L, null));
        }

        long done = 0;
        foreach (var (tensor, ggufName, target, heads) in plan)
        {
            var current = tensor;
            writer.AddTensor(ggufName, target, tensor.Shape, stream =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new PipelineProgress("export", current.Name, done++, plan.Count, "tensors"));
                WriteTensor(input, current, target, target == quantized ? codec : null, heads, config.HeadDim, options.Parallelism, stream, cancellationToken);
            });
        }
        writer.Commit();
        progress?.Report(new PipelineProgress("export", null, plan.Count, plan.Count, "tensors"));
        return new GgufExportReport(output, new FileInfo(output).Length, type, architecture, vocabulary.Model, vocabulary.Pre, vocabulary.Source, reports)
        {
            ChatTemplateFrom = template?.File,
        };
    }

    private static string? FindTokenizerJson(string modelPath)
    {
        var folder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var file = Path.Combine(folder, "tokenizer.json");
        return File.Exists(file) ? file : null;
    }

    private static IEnumerable<(string, object)> Metadata(ModelConfig config, string architecture, string modelPath, GgmlType type, bool quantized)
    {
        yield return ("general.architecture", architecture);
        yield return ("general.name", Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(modelPath)));
        // llama_ftype: the type most tensors have (LLAMA_FTYPE_ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8,
        // Q5_1 9, BF16 32, MXFP4_MOE 38).
        yield return ("general.file_type", type.Name switch
        {
            "f32" => 0u, "f16" => 1u, "q4_0" => 2u, "q4_1" => 3u, "q8_0" => 7u, "q5_0" => 8u, "q5_1" => 9u, "bf16" => 32u, _ => 38u,
        });
        if (quantized) yield return ("general.quantization_version", 2u);
        yield return ("general.generator", "nanoscale export");
        yield return ($"{architecture}.context_length", (uint)config.MaxSeqLen);
        yield return ($"{architecture}.embedding_length", (uint)config.Dim);
        yield return ($"{architecture}.block_count", (uint)config.Layers);
        yield return ($"{architecture}.feed_forward_length", (uint)config.HiddenDim);
        yield return ($"{architecture}.attention.head_count", (uint)config.Heads);
        yield return ($"{architecture}.attention.head_count_kv", (uint)config.KvHeads);
        yield return ($"{architecture}.attention.layer_norm_rms_epsilon", config.NormEps);
        yield return ($"{architecture}.rope.freq_base", config.RopeTheta);
        yield return ($"{architecture}.rope.dimension_count", (uint)config.HeadDim);
        if (config.HeadDim != config.Dim / config.Heads)
        {
            yield return ($"{architecture}.attention.key_length", (uint)config.HeadDim);
            yield return ($"{architecture}.attention.value_length", (uint)config.HeadDim);
        }
        yield return ($"{architecture}.vocab_size", (uint)config.VocabSize);
    }

    /// <summary>Llama-3's rotary scaling as llama.cpp takes it: one divisor per rotary pair (<c>rope_freqs.weight</c>),
    /// computed as <c>convert_hf_to_gguf.py</c> does from the same <c>rope_scaling</c> numbers.</summary>
    internal static float[] RopeFactors(ModelConfig config, RopeScaling scaling)
    {
        int dim = config.HeadDim;
        var factors = new float[dim / 2];
        double lowWavelength = scaling.OriginalMaxPositions / scaling.LowFreqFactor;
        double highWavelength = scaling.OriginalMaxPositions / scaling.HighFreqFactor;
        for (int i = 0; i < factors.Length; i++)
        {
            double frequency = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / dim);
            double wavelength = 2 * Math.PI / frequency;
            if (wavelength < highWavelength) factors[i] = 1;
            else if (wavelength > lowWavelength) factors[i] = scaling.Factor;
            else
            {
                double smooth = (scaling.OriginalMaxPositions / wavelength - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / scaling.Factor + smooth));
            }
        }
        return factors;
    }

    /// <summary>Rows of <paramref name="tensor"/> in chunks (whole heads when permuting), each permuted, converted or
    /// quantized, and written.</summary>
    private static void WriteTensor(LogicalCheckpoint input, LogicalCheckpoint.Logical tensor, GgmlType target, IBlockCodec? codec,
        int permuteHeads, int headDim, Parallelism parallelism, Stream stream, CancellationToken cancellationToken)
    {
        long rows = tensor.ElementCount / tensor.Shape[^1];
        int cols = checked((int)tensor.Shape[^1]);
        int chunkRows = permuteHeads > 0 ? headDim : (int)Math.Clamp((1 << 20) / cols, 1, Math.Max(1, rows));
        if (permuteHeads > 0 && rows != (long)permuteHeads * headDim)
            throw new CheckpointFormatException(input.Container.Path, tensor.Name, null,
                $"has {rows} rows, not {permuteHeads} heads of {headDim}; its rotary pairs cannot be reordered for llama.cpp");
        var values = new float[(long)chunkRows * cols];
        var permuted = permuteHeads > 0 ? new float[values.Length] : null;
        var bytes = new byte[target.RowBytes(cols)!.Value * chunkRows];
        var options = new CodecOptions { Parallelism = parallelism };
        using var decoder = tensor.Encoded is null ? null : input.OpenDecoder(tensor);
        using var view = tensor.Plain is null ? null : input.Container.Map(tensor.Plain);
        for (long first = 0; first < rows; first += chunkRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = (int)Math.Min(chunkRows, rows - first);
            var chunk = values.AsSpan(0, count * cols);
            if (decoder is not null) decoder.ReadRows(first, count, chunk);
            else view!.ReadFloats(first * cols, chunk);
            if (permuted is not null)
            {
                // Hugging Face rotates (i, i + d/2) within a head; llama.cpp rotates (2i, 2i + 1): row 2i + s of the
                // head takes row s·d/2 + i (convert_hf_to_gguf.py's permute).
                int half = headDim / 2;
                for (int i = 0; i < half; i++)
                for (int s = 0; s < 2; s++)
                    chunk.Slice((s * half + i) * cols, cols).CopyTo(permuted.AsSpan((2 * i + s) * cols, cols));
                permuted.AsSpan(0, chunk.Length).CopyTo(chunk);
            }
            var output = bytes.AsSpan(0, checked((int)(target.RowBytes(cols)!.Value * count)));
            try
            {
                if (codec is not null) codec.Quantize(chunk, count, cols, [], options, first * cols, output, []);
                else TensorData.FromFloat(chunk, target.Plain!.Value, output);
            }
            catch (NonFiniteValueException e)
            {
                throw e.In(tensor.Name);
            }
            stream.Write(output);
        }
    }
}
