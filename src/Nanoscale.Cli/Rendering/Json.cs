using System.Text.Json;
using System.Text.Json.Serialization;

namespace Nanoscale.Cli.Rendering;

internal static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(), new FiniteOrNull<double>(), new FiniteOrNull<float>() },
    };

    /// <summary>JSON has no infinity or NaN: a non-finite number (the SQNR of an exact round trip) is written as null.</summary>
    private sealed class FiniteOrNull<T> : JsonConverter<T> where T : struct, System.Numerics.IFloatingPointIeee754<T>
    {
        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            throw new NotSupportedException("the CLI only writes JSON");

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
        {
            if (!T.IsFinite(value)) writer.WriteNullValue();
            else writer.WriteNumberValue(double.CreateChecked(value));
        }
    }
}
