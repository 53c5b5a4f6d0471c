namespace Nanoscale.Formats.Mx;

/// <summary>How an MX block's shared exponent X is chosen (SPEC §4). The scale is 2^X, stored as E8M0 code X + 127.</summary>
internal enum MxScaleRule
{
    /// <summary>OCP default: X = floor(log2(amax)) − emax, exact from the float's bits. Values above Max·2^X saturate.</summary>
    Floor,

    /// <summary>Smallest X with amax / 2^X ≤ Max, so nothing saturates (X = floor rule or one more).</summary>
    Ceil,

    /// <summary>Tries the floor X, then X − 1, then X + 1 and keeps the lowest block squared error (earliest on ties).</summary>
    Mse,
}
