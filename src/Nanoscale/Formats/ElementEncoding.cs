namespace Nanoscale.Formats;

/// <summary>How the sign of an element code is stored.</summary>
public enum ElementEncoding
{
    /// <summary>1 sign bit above the magnitude bits (every minifloat ExMy). Has a negative-zero code.</summary>
    SignMagnitude,

    /// <summary>Two's complement integer (MXINT). No negative zero; the most negative code decodes but is never emitted.</summary>
    TwosComplement,
}
