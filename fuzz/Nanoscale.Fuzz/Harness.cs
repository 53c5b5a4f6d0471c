using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
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
    public static readonly string[] Targets = ["safetensors", "gguf", "llama2c", "tokenizer-bin", "tokenizer-json", "spec", "rans",
        "index", "config", "sp-model"];

    /// <summary>The model folder the <c>index</c> and <c>config</c> targets put their input into: a generated Llama of a
    /// few hundred weights in eight shards, so both files name real tensors. A property, not a field: nothing of the
    /// instrumented library may run before SharpFuzz's loop starts (the harness's static constructor would).</summary>
    public static SampleOptions ModelFolderShape => new()
    {
        Dim = 8, HiddenDim = 16, Layers = 1, Heads = 2, KvHeads = 1, VocabSize = 16, MaxSeqLen = 8, DType = DType.F32, ShardBytes = 512,
    };

    /// <summary>The file of the model folder each folder target replaces with its input.</summary>
    private static string FolderFile(string target) => target == "index" ? "model.safetensors.index.json" : "config.json";

    /// <summary>Writes the valid input of a folder target (<c>index</c>, <c>config</c>) to <paramref name="path"/>: the
    /// file as the generated model folder has it, to seed the fuzzer.</summary>
    public static void WriteSeed(string target, string path)
    {
        var work = Directory.CreateTempSubdirectory("nanoscale-fuzz-seed-").FullName;
        try { File.Copy(Path.Combine(SampleCheckpoint.Write(work, ModelFolderShape), FolderFile(target)), path, overwrite: true); }
        finally { Directory.Delete(work, recursive: true); }
    }

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
        if (target is "index" or "config")
        {
            RunModelFolder(target, input, workFolder);
            return;
        }
        string extension = target switch
        {
            "safetensors" => ".safetensors",
            "gguf" => ".gguf",
            "llama2c" => ".bin",
            "tokenizer-bin" => ".bin",
            "tokenizer-json" => ".json",
            "sp-model" => ".model",
            _ => throw new ArgumentException($"unknown target {target}; targets: {string.Join(", ", Targets)}"),
        };
        var path = Path.Combine(workFolder, "input" + extension);
        File.WriteAllBytes(path, input.ToArray());
        try
        {
            if (target.StartsWith("tokenizer", StringComparison.Ordinal) || target == "sp-model")
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

    /// <summary>The <c>index</c> and <c>config</c> targets: the input replaces that file of a generated sharded model
    /// folder, which is then opened and run as the verbs do (every tensor read, the model built, one token stepped).</summary>
    private static void RunModelFolder(string target, ReadOnlySpan<byte> input, string workFolder)
    {
        var folder = Path.Combine(workFolder, "model");
        if (!File.Exists(Path.Combine(folder, "config.json"))) SampleCheckpoint.Write(folder, ModelFolderShape);
        var pristine = Path.Combine(workFolder, "pristine-" + FolderFile(target));
        if (!File.Exists(pristine)) File.Copy(Path.Combine(folder, FolderFile(target)), pristine);
        File.WriteAllBytes(Path.Combine(folder, FolderFile(target)), input.ToArray());
        try
        {
            using var checkpoint = LogicalCheckpoint.Open(folder);
            foreach (var tensor in checkpoint.Tensors)
                if (tensor.Plain is { } plain && tensor.ElementCount <= MaxDecodedElements)
                {
                    using var view = checkpoint.Container.Map(plain);
                    if (plain.DType.IsFloat()) view.ToFloatArray();
                }
            if (checkpoint.Config is not null)
            {
                var model = LlamaModel.Load(checkpoint.Container, new RuntimeOptions { Parallelism = Parallelism.SingleThread });
                model.CreateSession(Math.Min(4, model.Config.MaxSeqLen)).Step(0);
            }
        }
        catch (NanoscaleException) { }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        finally
        {
            // The other target's file is put back, so each input meets the folder as generated.
            File.Copy(pristine, Path.Combine(folder, FolderFile(target)), overwrite: true);
        }
    }
}
