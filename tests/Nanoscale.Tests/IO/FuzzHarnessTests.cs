using Nanoscale.Codecs;
using Nanoscale.Fuzz;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.IO;

/// <summary>
/// The fuzzing harness of <c>fuzz/</c> (run under AFL++ by <c>fuzz/run.sh</c>) on deterministic mutations of real
/// inputs of each target — bit flips, truncations, overwritten runs, spliced copies — in this process: nothing but the
/// documented errors may escape (the harness swallows those), so a regression the fuzzer would call a crash fails here.
/// </summary>
public class FuzzHarnessTests
{
    private static IEnumerable<byte[]> Mutations(byte[] seed, int count, int salt)
    {
        var random = new Random(salt);
        yield return seed;
        for (int i = 0; i < count; i++)
        {
            var bytes = (byte[])seed.Clone();
            switch (i % 4)
            {
                case 0: bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8)); break;
                case 1: bytes = bytes[..random.Next(bytes.Length)]; break;
                case 2:
                {
                    int at = random.Next(bytes.Length), length = Math.Min(bytes.Length - at, random.Next(1, 9));
                    byte fill = (byte)(random.Next(2) == 0 ? 0xFF : random.Next(256));
                    bytes.AsSpan(at, length).Fill(fill);
                    break;
                }
                default:
                {
                    int from = random.Next(bytes.Length), to = random.Next(bytes.Length), length = Math.Min(Math.Min(bytes.Length - from, bytes.Length - to), 64);
                    bytes.AsSpan(from, length).ToArray().CopyTo(bytes, to);
                    break;
                }
            }
            yield return bytes;
        }
    }

    [Fact]
    public void MutatedInputsRaiseOnlyDocumentedErrors()
    {
        using var dir = new TempDir();
        var work = Directory.CreateDirectory(dir.File("work")).FullName;
        // Seeds: a compressed container of two block formats, a GGUF export, the llama2.c model and its tokenizer.
        var plain = dir.File("plain.safetensors");
        byte[] values = [.. Enumerable.Range(0, 256).SelectMany(i => BitConverter.GetBytes((i % 13 - 6) / 5f))];
        new SafetensorsWriter(plain).Add("w", Nanoscale.Tensors.DType.F32, [4, 64], values).Commit();
        var container = dir.File("c.safetensors");
        using (var source = CheckpointLoader.Open(plain))
            Compressor.Compress(source, container, new CompressOptions { Codec = CodecRegistry.Create("mxfp4:entropy=rans"), Selection = TensorSelection.For(CodecRegistry.Create("mxfp4"), "w") });
        var gguf = dir.File("s.gguf");
        GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "q4_0" });
        Harness.WriteSeed("index", dir.File("index.json"));
        Harness.WriteSeed("config", dir.File("config.json"));
        var seeds = new (string Target, byte[] Bytes, int Mutations)[]
        {
            ("safetensors", File.ReadAllBytes(container), 400),
            ("gguf", File.ReadAllBytes(gguf), 60),
            ("llama2c", File.ReadAllBytes(SharedData.Stories260K), 40),
            ("tokenizer-bin", File.ReadAllBytes(SharedData.Tok512), 200),
            ("tokenizer-json", File.ReadAllBytes(SharedData.Path("tokenizers", "gpt2", "tokenizer.json")), 8),
            ("spec", "caldera:rank=4,q=mxfp4:scale=mse;round=away,lr=int4"u8.ToArray(), 300),
            ("rans", Nanoscale.Lossless.LosslessCodec.Encode(values, Nanoscale.Tensors.DType.F32, Nanoscale.Lossless.LosslessOptions.Default with { MinimumSavings = 0 }), 300),
            ("sp-model", File.ReadAllBytes(Runtime.SentencePieceTokenizerTests.WriteModel(dir.File("tok512.model"))), 100),
            ("index", File.ReadAllBytes(dir.File("index.json")), 150),
            ("config", File.ReadAllBytes(dir.File("config.json")), 150),
        };
        foreach (var (target, bytes, count) in seeds)
        {
            int n = 0;
            foreach (var input in Mutations(bytes, count, target.Length))
            {
                try { Harness.Run(target, input, work); }
                catch (Exception e) { throw new Xunit.Sdk.XunitException($"{target} mutation {n}: {e}"); }
                n++;
            }
        }
    }

    /// <summary>The corpus AFL++ built for each target (<c>fuzz/corpus</c>, saved from <c>fuzz/run.sh</c>) and every
    /// crash it found (<c>fuzz/regressions</c>, fixed since), replayed in this process.</summary>
    [Theory]
    [InlineData("safetensors")]
    [InlineData("gguf")]
    [InlineData("llama2c")]
    [InlineData("tokenizer-bin")]
    [InlineData("tokenizer-json")]
    [InlineData("spec")]
    [InlineData("rans")]
    [InlineData("sp-model")]
    [InlineData("index")]
    [InlineData("config")]
    public void TheSavedCorpusAndEveryFoundCrashReplayCleanly(string target)
    {
        var root = Architecture.ArchitectureRules.RepositoryRoot();
        var files = new[] { "corpus", "regressions" }
            .Select(kind => Path.Combine(root, "fuzz", kind, target))
            .Where(Directory.Exists)
            .SelectMany(Directory.EnumerateFiles)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);
        using var dir = new TempDir();
        foreach (var file in files)
        {
            try { Harness.Run(target, File.ReadAllBytes(file), dir.Path); }
            catch (Exception e) { throw new Xunit.Sdk.XunitException($"{Path.GetRelativePath(root, file)}: {e.GetType().Name}: {e.Message}"); }
        }
    }
}
