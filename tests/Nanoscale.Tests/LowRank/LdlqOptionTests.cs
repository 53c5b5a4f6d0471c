using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;
using static Nanoscale.Tests.LowRank.LowRankTestData;

namespace Nanoscale.Tests.LowRank;

/// <summary><c>ldlq=1</c> on block formats (issue 16): LDLQ (GPTQ's rounding) into the format's own stored layout.</summary>
public class LdlqOptionTests
{
    private const int Rows = 24, Cols = 160;

    private static EncodedTensor Encode(string spec, float[] w, CalibrationSet? calibration)
    {
        using var dir = new TempDir();
        var path = dir.File("w.safetensors");
        var bytes = new byte[w.Length * 4];
        TensorData.FromFloat(w, DType.F32, bytes);
        new SafetensorsWriter(path).Add("w", DType.F32, [Rows, Cols], bytes).Commit();
        using var file = CheckpointLoader.Open(path);
        using var view = file.Map(file.Tensors[0]);
        return CodecRegistry.Create(spec).Encode(view, new EncodeOptions { Calibration = calibration });
    }

    /// <summary>The spec with an <c>ldlq</c> option added (after a colon, or a comma when it has options).</summary>
    private static string With(string spec, string ldlq) => spec + (spec.Contains(':') ? "," : ":") + "ldlq=" + ldlq;

    private static byte[] Part(EncodedTensor t, string name) => t.Parts.Single(p => p.Suffix == name).Data.ToArray();

    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]
    [InlineData("nxfp4")]
    [InlineData("mxint3")]
    [InlineData("e8")]      // vectors of 8: the codec's own points
    [InlineData("e8:bits=3")]
    [InlineData("e8:bits=4")]
    public void WithoutAHessianTheBytesAreThePlainFormats(string spec)
    {
        var w = Weights(Rows, Cols, 4);
        var plain = Encode(spec, w, null);
        var ldlq = Encode(With(spec, "1"), w, null);
        Assert.Equal(plain.Parts.Select(p => p.Suffix), ldlq.Parts.Select(p => p.Suffix));
        foreach (var part in plain.Parts) Assert.Equal(part.Data, Part(ldlq, part.Suffix));
        Assert.StartsWith("nearest", ldlq.Parameters!["rounding"]);
        Assert.Equal(With(spec, "1"), CodecRegistry.Create(With(spec, "1")).Spec);
    }

    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]   // with its per-tensor scale
    [InlineData("nxfp4")]
    [InlineData("nxfp3")]
    [InlineData("mxint3")]
    [InlineData("e8")]      // block LDLQ on vectors of 8
    [InlineData("e8:bits=4")] // and its residual stage
    public void WithAHessianItStoresLdlqsRoundingInThePlainLayout(string spec)
    {
        var w = Weights(Rows, Cols, 6);
        var h = CorrelatedHessian(Cols, 21);
        var calibration = new CalibrationSet(new Dictionary<string, Hessian> { ["w"] = h }, 512, "test");
        var encoded = Encode(With(spec, "1"), w, calibration);
        Assert.Equal("ldlq", encoded.Parameters!["rounding"]);

        var codec = CodecRegistry.CreateBlockCodec(spec);
        var expected = Ldlq.Quantize(ToDouble(w), Rows, Cols, h, new BlockGrid(codec));
        var decoded = new float[w.Length];
        byte[] tensorData = encoded.Parts.Any(p => p.Suffix == "tensor_data") ? Part(encoded, "tensor_data") : [];
        codec.Dequantize(Part(encoded, "blocks"), Part(encoded, "scales"), tensorData, Rows, Cols, new CodecOptions(), decoded);
        // The plain format's decoder reads back exactly the values LDLQ chose.
        Assert.Equal(expected.Values, decoded);

        var nearest = Encode(spec, w, null);
        var rtn = new float[w.Length];
        codec.Dequantize(Part(nearest, "blocks"), Part(nearest, "scales"), tensorData.Length > 0 ? Part(nearest, "tensor_data") : [],
            Rows, Cols, new CodecOptions(), rtn);
        double ldlqError = WeightedError(decoded, w, Rows, Cols, h), rtnError = WeightedError(rtn, w, Rows, Cols, h);
        Assert.True(ldlqError < 0.9 * rtnError, $"{spec}: LDLQ {ldlqError:g4} vs nearest {rtnError:g4}");
        double reported = double.Parse(encoded.Parameters["activation_error"], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(reported, 1e-4, 1);
    }

    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nxfp4")]
    public void ActOrderStoresItsRoundingInThePlainLayoutToo(string spec)
    {
        var w = Weights(Rows, Cols, 6);
        var h = CorrelatedHessian(Cols, 21);
        var calibration = new CalibrationSet(new Dictionary<string, Hessian> { ["w"] = h }, 512, "test");
        var encoded = Encode(spec + ":ldlq=act", w, calibration);
        Assert.Equal("ldlq, act-order", encoded.Parameters!["rounding"]);
        Assert.Equal(spec + ":ldlq=act", CodecRegistry.Create(spec + ":ldlq=act").Spec);
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var expected = Ldlq.Quantize(ToDouble(w), Rows, Cols, h, new BlockGrid(codec), actOrder: true);
        var decoded = new float[w.Length];
        codec.Dequantize(Part(encoded, "blocks"), Part(encoded, "scales"), [], Rows, Cols, new CodecOptions(), decoded);
        Assert.Equal(expected.Values, decoded);
    }

    [Theory]
    [InlineData("q4_0:ldlq=1", "inside the block")]
    [InlineData("mxfp4:ldlq=2", "ldlq")]
    public void FormatsLdlqCannotRoundAreRefusedWithTheReason(string spec, string reason)
    {
        var e = Assert.Throws<FormatSpecException>(() => CodecRegistry.Create(spec));
        Assert.Contains(reason, e.Message);
    }
}
