using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Fuzz;

/// <summary>
/// What the fuzzer feeds untrusted bytes to: a file is written and opened the way the verbs open it, and everything in
/// it is read. The contract (docs/reliability.md) is that bad input raises only the documented errors — a
/// <see cref="NanoscaleException"/> (which names the file, field and offset) or an operating-system error — so any other
/// exception escapes the harness and is a crash to the fuzzer; a hang is its timeout.
/// </summary>
public static class Harness
{
    public static readonly string[] Targets = ["safetensors", "gguf", "llama2c", "tokenizer-bin", "tokenizer-json", "spec", "rans"];

    /// <summary>Largest tensor the harness decodes (elements): bigger ones are opened and mapped, not expanded.</summary>
    private const long MaxDecodedElements = 1 << 22;

    /// <summary>Runs <paramref name="target"/> on <paramref name="input"/>; documented errors are swallowed.</summary>
    public static void Run(string target, ReadOnlySpan<byte> input, string workFolder)
    {
        if (target is "spec" or "rans")
        {
            try
            {
                if (target == "spec") CodecRegistry.Create(System.Text.Encoding.UTF8.GetString(input));
                else
                {
                    var info = Lossless.LosslessCodec.ReadInfo(input, "fuzz");
                    if (info.DecodedLength <= MaxDecodedElements) Lossless.LosslessCodec.Decode(input, new byte[info.DecodedLength], "fuzz");
                }
            }
            catch (NanoscaleException) { }
            return;
        }
        string extension = target switch
        {
            "safetensors" => ".safetensors",
            "gguf" => ".gguf",
            "llama2c" => ".bin",
            "tokenizer-bin" => ".bin",
            "tokenizer-json" => ".json",
            _ => throw new ArgumentException($"unknown target {target}; targets: {string.Join(", ", Targets)}"),
        };
        var path = Path.Combine(workFolder, "input" + extension);
        File.WriteAllBytes(path, input.ToArray());
        try
        {
            if (target.StartsWith("tokenizer", StringComparison.Ordinal))
            {
                var tokenizer = TokenizerLoader.Open(path);
                var ids = tokenizer.Encode("Once upon a time, there was a ✓ naïve 🐱.", addBos: true);
                tokenizer.Decode(ids);
                (tokenizer as IDisposable)?.Dispose();
                return;
            }
            using var checkpoint = LogicalCheckpoint.Open(path);
            _ = checkpoint.Config;
            foreach (var tensor in checkpoint.Tensors)
            {
                if (tensor.ElementCount > MaxDecodedElements) continue;
                if (tensor.Encoded is { } stored)
                {
                    using var decoder = checkpoint.OpenDecoder(tensor);
                    decoder.ReadRows(0, (int)stored.Rows, new float[tensor.ElementCount]);
                }
                else
                {
                    using var view = checkpoint.Container.Map(tensor.Plain!);
                    if (tensor.Plain!.DType.IsFloat()) view.ToFloatArray();
                }
            }
        }
        catch (NanoscaleException) { }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
