namespace Nanoscale.Formats;

/// <summary>A NaN or ±Inf weight reached a quantizer under <see cref="NonFinitePolicy.Throw"/>.</summary>
public sealed class NonFiniteValueException : ArithmeticException
{
    public NonFiniteValueException(long elementIndex, float value)
        : base($"element {elementIndex} is {Describe(value)}: a non-finite weight means a broken checkpoint " +
               "(use NonFinitePolicy.PassThrough to keep such blocks as NaN)")
    {
        ElementIndex = elementIndex;
        Value = value;
    }

    /// <summary>Flat index of the element in its tensor (row = index / cols, column = index % cols).</summary>
    public long ElementIndex { get; }

    public float Value { get; }

    private static string Describe(float value) =>
        float.IsNaN(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
}
