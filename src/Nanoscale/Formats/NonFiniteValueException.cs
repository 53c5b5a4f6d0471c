using System.Globalization;
using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>
/// A NaN or ±Inf weight reached a quantizer under <see cref="NonFinitePolicy.Throw"/> (SPEC §4). The codec reports the
/// element; the layers above add the tensor (<see cref="In"/>) and the file, and name the option that lets such weights
/// through.
/// </summary>
public sealed class NonFiniteValueException : NanoscaleException
{
    /// <summary>The remedy at this level: the codec option.</summary>
    public const string CodecRemedy = "set CodecOptions.NonFinite to NonFinitePolicy.PassThrough to keep such blocks as NaN";

    public NonFiniteValueException(long elementIndex, float value)
        : this(elementIndex, value, null, null, "CodecOptions.NonFinite", CodecRemedy, null)
    {
    }

    private NonFiniteValueException(long elementIndex, float value, string? tensor, string? file, string? option, string? remedy, Exception? inner)
        : base(Compose(elementIndex, value, tensor, file, remedy), option, inner)
    {
        ElementIndex = elementIndex;
        Value = value;
        Tensor = tensor;
        File = file;
        Remedy = remedy;
    }

    /// <summary>Flat index of the element in its tensor (row = index / cols, column = index % cols).</summary>
    public long ElementIndex { get; }

    public float Value { get; }

    /// <summary>The tensor, once a layer that knows it has added it.</summary>
    public string? Tensor { get; }

    /// <summary>The checkpoint file, once a layer that knows it has added it.</summary>
    public string? File { get; }

    /// <summary>What would let such a weight through (names the option), or null when nothing does.</summary>
    public string? Remedy { get; }

    /// <summary>The same error located in <paramref name="tensor"/> and/or <paramref name="file"/>; <paramref name="option"/>
    /// and <paramref name="remedy"/> replace the codec-level ones when the caller offers its own (null keeps them, "" drops them).</summary>
    public NonFiniteValueException In(string? tensor = null, string? file = null, string? option = null, string? remedy = null) =>
        new(ElementIndex, Value, tensor ?? Tensor, file ?? File,
            option is null ? Option : option.Length == 0 ? null : option,
            remedy is null ? Remedy : remedy.Length == 0 ? null : remedy, this);

    private static string Compose(long elementIndex, float value, string? tensor, string? file, string? remedy) =>
        (file is null ? "" : $"{file}: ") + (tensor is null ? "" : $"{tensor}: ") +
        $"element {elementIndex} is {value.ToString(CultureInfo.InvariantCulture)}; a checkpoint with non-finite weights is broken" +
        (remedy is null ? "" : $" ({remedy})");
}
