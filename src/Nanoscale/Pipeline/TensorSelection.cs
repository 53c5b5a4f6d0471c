using System.Text.RegularExpressions;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Which tensors a codec applies to (SPEC §7). By default: 2-D floating-point weights of linear layers.
/// Embeddings, the output head, norms and biases keep their original precision. <c>--include</c> adds tensors
/// whose name matches; <c>--exclude</c> removes them (exclude wins).
/// </summary>
public sealed class TensorSelection
{
    /// <summary>Names that look like embeddings, output heads or norms: kept out by default.</summary>
    public static readonly Regex DefaultExcluded = new(
        @"(embed|wte|wpe|lm_head|^output\.weight$|norm|(^|\.)ln_?\w*(\.|$))", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);

    private readonly Regex? _include;
    private readonly Regex? _exclude;
    private readonly bool _everything;

    /// <param name="include">Regex of extra tensor names to select.</param>
    /// <param name="exclude">Regex of tensor names never to select (wins over everything else).</param>
    /// <param name="everything">Select every non-empty tensor, whatever its dtype (lossless coding), instead of the linear weights.</param>
    public TensorSelection(string? include = null, string? exclude = null, bool everything = false)
    {
        _include = Compile(include, "TensorSelection.Include");
        _exclude = Compile(exclude, "TensorSelection.Exclude");
        _everything = everything;
    }

    public static TensorSelection Default { get; } = new();

    /// <summary>The selection for a codec: every tensor for a lossless codec, the linear weights otherwise.</summary>
    public static TensorSelection For(Codecs.ITensorCodec codec, string? include = null, string? exclude = null) =>
        new(include, exclude, everything: codec.IsLossless);

    public bool Selects(TensorInfo tensor)
    {
        if (tensor.ElementCount == 0) return false;
        if (_exclude?.IsMatch(tensor.Name) == true) return false;
        if (_everything) return true;
        if (!tensor.DType.IsFloat()) return false;
        if (_include?.IsMatch(tensor.Name) == true) return true;
        return tensor.Shape.Length == 2 && !DefaultExcluded.IsMatch(tensor.Name);
    }

    private static Regex? Compile(string? pattern, string option)
    {
        if (string.IsNullOrEmpty(pattern)) return null;
        try { return new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)); }
        catch (ArgumentException e) { throw new InvalidOptionException(option, $"\"{pattern}\" is not a valid regular expression: {e.Message}", e); }
    }
}
