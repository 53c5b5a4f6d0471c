using System.Text.Json;
using System.Text.Json.Nodes;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// The metadata that makes a safetensors file a Nanoscale compressed checkpoint (SPEC §8; docs/container.md).
/// All keys live in <c>__metadata__</c> (string values), so any safetensors reader still opens the file.
/// </summary>
internal static class CompressedLayout
{
    public const string VersionKey = Checksums.VersionKey;

    /// <summary>The version written under <see cref="VersionKey"/>.</summary>
    public const string WriterVersion = "0.2.0"; // 0.2.0: every file carries the integrity record
    public const string FormatKey = "nanoscale.format";
    public const string TensorsKey = "nanoscale.tensors";
    public const string ConfigKey = "nanoscale.config";

    /// <summary>Per encoded tensor: its codec spec, original dtype and shape, part suffixes, and codec parameters.</summary>
    public sealed record Entry(string Codec, DType DType, long[] Shape, IReadOnlyList<string> Parts, IReadOnlyDictionary<string, string> Parameters);

    public static string SerializeEntries(IEnumerable<KeyValuePair<string, Entry>> entries)
    {
        var root = new JsonObject();
        foreach (var (name, e) in entries)
        {
            var parameters = new JsonObject();
            foreach (var (k, v) in e.Parameters) parameters[k] = v;
            root[name] = new JsonObject
            {
                ["codec"] = e.Codec,
                ["dtype"] = e.DType.Name(),
                ["shape"] = new JsonArray(e.Shape.Select(d => (JsonNode)d).ToArray()),
                ["parts"] = new JsonArray(e.Parts.Select(p => (JsonNode)p).ToArray()),
                ["params"] = parameters,
            };
        }
        return root.ToJsonString();
    }

    /// <summary>Parses the entries; null when the file is not a compressed checkpoint.</summary>
    /// <exception cref="CheckpointFormatException">The metadata is present but malformed.</exception>
    public static List<KeyValuePair<string, Entry>>? ReadEntries(ICheckpoint container)
    {
        var text = container.Metadata.FirstOrDefault(m => m.Key == TensorsKey).Value;
        if (text is null) return null;
        var field = $"__metadata__.{TensorsKey}";
        try
        {
            var result = new List<KeyValuePair<string, Entry>>();
            using var document = JsonDocument.Parse(text);
            foreach (var tensor in document.RootElement.EnumerateObject())
            {
                var e = tensor.Value;
                var dtypeName = e.GetProperty("dtype").GetString() ?? "";
                if (!DTypes.TryParse(dtypeName, out var dtype))
                    throw new CheckpointFormatException(container.Path, $"{field}.{tensor.Name}.dtype", null, $"unknown dtype \"{dtypeName}\"");
                var shape = e.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                if (TensorShape.ElementCount(shape) < 0)
                    throw new CheckpointFormatException(container.Path, $"{field}.{tensor.Name}.shape", null, "invalid shape");
                var parts = e.GetProperty("parts").EnumerateArray().Select(p => p.GetString() ?? "").ToList();
                var parameters = e.TryGetProperty("params", out var p)
                    ? p.EnumerateObject().ToDictionary(x => x.Name, x => x.Value.GetString() ?? "")
                    : new Dictionary<string, string>();
                result.Add(new(tensor.Name, new Entry(e.GetProperty("codec").GetString() ?? "", dtype, shape, parts, parameters)));
            }
            return result;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new CheckpointFormatException(container.Path, field, null, $"malformed compressed-tensor table ({e.Message})", e);
        }
    }

    public static string SerializeConfig(ModelConfig config) => JsonSerializer.Serialize(config, ConfigJson);

    public static ModelConfig? ReadConfig(ICheckpoint container)
    {
        var text = container.Metadata.FirstOrDefault(m => m.Key == ConfigKey).Value;
        if (text is null) return null;
        try { return JsonSerializer.Deserialize<ModelConfig>(text, ConfigJson); }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(container.Path, $"__metadata__.{ConfigKey}", null, $"malformed model config ({e.Message})", e);
        }
    }

    private static readonly JsonSerializerOptions ConfigJson = new()
    {
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
    };
}
