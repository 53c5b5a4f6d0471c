namespace Nanoscale.Formats;

/// <summary>
/// Anything a format specification string (SPEC §7) can name. Block formats implement <see cref="IBlockCodec"/>;
/// later families (lossless, vp, caldera) add their own interfaces and register in <see cref="FormatRegistry"/>.
/// </summary>
public interface ICodec
{
    /// <summary>Canonical specification string: the full name plus only non-default options, in the registry's key
    /// order, e.g. <c>mxfp4</c>, <c>mxfp4:scale=ceil</c>, <c>mxfp8-e4m3</c> (never the alias <c>mxfp8</c>).</summary>
    string Spec { get; }
}
