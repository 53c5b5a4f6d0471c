using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

public class CalibrationCacheTests
{
    private static readonly CalibrationOptions Options = new() { Tokens = 512 };

    [Fact]
    public void ACachedCalibrationHoldsExactlyTheHessiansInMemory()
    {
        using var dir = new TempDir();
        var inMemory = Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, null, Options);
        var cached = Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, null, Options, dir.File("cache"));
        Assert.Equal(inMemory.TensorNames.Order(), cached.TensorNames.Order());
        Assert.Equal(inMemory.Tokens, cached.Tokens);
        foreach (var name in inMemory.TensorNames)
        {
            var a = inMemory.Find(name)!;
            var b = cached.Find(name)!;
            Assert.Equal(a.Scale, b.Scale);
            Assert.Equal(a.Matrix.ToColumnMajorArray(), b.Matrix.ToColumnMajorArray()); // bit for bit
        }
        // q, k and v read one input: one file, and one object when asked for in a row.
        Assert.Equal(5 * 4, Directory.GetFiles(dir.File("cache"), "*.f64").Length);
        Assert.Same(cached.Find("model.layers.0.self_attn.q_proj.weight"), cached.Find("model.layers.0.self_attn.k_proj.weight"));
        using var model = CheckpointLoader.Open(SharedData.Stories260K);
        Assert.NotNull(CalibrationCache.TryOpen(dir.File("cache"), model, SharedData.WikiText2, 512));
        Assert.Null(CalibrationCache.TryOpen(dir.File("none"), model, SharedData.WikiText2, 512));
    }

    [Fact]
    public void ACacheOfAnotherCalibrationIsRefusedNamingWhatDiffers()
    {
        using var dir = new TempDir();
        Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, null, Options, dir.File("cache"));
        using var model = CheckpointLoader.Open(SharedData.Stories260K);
        var tokens = Assert.Throws<InputException>(() => CalibrationCache.TryOpen(dir.File("cache"), model, SharedData.WikiText2, 1024));
        Assert.Contains("calibration tokens", tokens.Message);
        var text = Assert.Throws<InputException>(() => CalibrationCache.TryOpen(dir.File("cache"), model, SharedData.TinyStoriesText, 512));
        Assert.Contains("calibration text", text.Message);
    }

    [Theory]
    [InlineData("{\"entries\": null}")]
    [InlineData("[1, 2]")]
    [InlineData("{\"version\": 1, \"model\": null}")]
    public void AHostileCalibrationIndexIsALocatedError(string json)
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("cache"));
        File.WriteAllText(Path.Combine(dir.File("cache"), CalibrationCache.IndexName), json);
        using var model = CheckpointLoader.Open(SharedData.Stories260K);
        var error = Assert.Throws<CheckpointFormatException>(() => CalibrationCache.TryOpen(dir.File("cache"), model, SharedData.WikiText2, 512));
        Assert.Contains(CalibrationCache.IndexName, error.Message);
    }

    [Fact]
    public void ADamagedHessianFileIsNamed()
    {
        using var dir = new TempDir();
        var set = Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, null, Options, dir.File("cache"));
        var file = Directory.GetFiles(dir.File("cache"), "*.f64").Order().First();
        File.WriteAllBytes(file, File.ReadAllBytes(file)[..100]);
        var error = Assert.Throws<CheckpointFormatException>(() => set.TensorNames.Select(set.Find).ToList());
        Assert.Contains(Path.GetFileName(file), error.Message);
    }

    [Fact]
    public void UnitsSharingOneCachedCalibrationMergeIntoWhatOneRunWrites()
    {
        using var dir = new TempDir();
        var request = new CompressionRequest
        {
            Format = "caldera:rank=4,q=mxint3,lr=mxint4,iters=2", CalibrationPath = SharedData.WikiText2, CalibrationTokens = 512,
            MeasureError = false, Include = null, Exclude = @"layers\.[2-4]\.",
        };
        CompressionRun.Run(SharedData.Stories260K, dir.File("single"), request);
        for (int i = 0; i < 3; i++)
            CompressionRun.Run(SharedData.Stories260K, dir.File("units"), request with { Shard = new ShardUnit(i, 3), CalibrationCache = dir.File("hessians") });
        Assert.True(File.Exists(Path.Combine(dir.File("hessians"), CalibrationCache.IndexName)));
        ShardedCompression.Merge(dir.File("units"), dir.File("merged"), measureError: false);
        foreach (var f in Directory.GetFiles(dir.File("single")))
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(Path.Combine(dir.File("merged"), Path.GetFileName(f))));
    }
}
