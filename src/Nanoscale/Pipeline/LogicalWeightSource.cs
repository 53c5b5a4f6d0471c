using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>
/// Weights from any checkpoint, seen as its logical tensors: encoded 2-D tensors stay encoded and are decoded a tile of rows at a time
/// inside each product (<see cref="RowDecodedLinearWeight"/>), so memory stays near the compressed size; plain 2-D
/// tensors stay mapped in their stored dtype (<see cref="CheckpointWeightSource"/>), norms are read as float32.
/// </summary>
internal sealed class LogicalWeightSource(LogicalCheckpoint checkpoint) : IWeightSource, IDisposable
{
    private readonly CheckpointWeightSource _plain = new(checkpoint.Container);
    private readonly List<ITensorDecoder> _decoders = [];

    public bool Contains(string name) => checkpoint.Find(name) is not null;

    public IReadOnlyList<long> Shape(string name) => Get(name).Shape;

    public ILinearWeight Linear(string name)
    {
        var tensor = Get(name);
        if (tensor.Encoded is null) return _plain.Linear(name);
        if (tensor.Shape.Length != 2 || tensor.Shape[0] > int.MaxValue || tensor.Shape[1] > int.MaxValue)
            throw new CheckpointFormatException(checkpoint.Container.Path, name, null, $"expected a 2-D weight, found [{string.Join(", ", tensor.Shape)}]");
        var decoder = checkpoint.OpenDecoder(tensor);
        lock (_decoders) _decoders.Add(decoder);
        return new DecodedWeight(decoder, (int)tensor.Shape[0], (int)tensor.Shape[1]);
    }

    public float[] Vector(string name)
    {
        var tensor = Get(name);
        if (tensor.Encoded is null) return _plain.Vector(name);
        var values = new float[checked((int)tensor.ElementCount)];
        using var decoder = checkpoint.OpenDecoder(tensor);
        decoder.ReadRows(0, checked((int)tensor.Encoded.Rows), values);
        return values;
    }

    private LogicalCheckpoint.Logical Get(string name) =>
        checkpoint.Find(name) ?? throw new CheckpointFormatException(checkpoint.Container.Path, name, null, "tensor not found in the checkpoint");

    public void Dispose()
    {
        _plain.Dispose();
        lock (_decoders)
        {
            foreach (var d in _decoders) d.Dispose();
            _decoders.Clear();
        }
    }

    private sealed class DecodedWeight(ITensorDecoder decoder, int rows, int columns) : RowDecodedLinearWeight(rows, columns)
    {
        public override void ReadRows(int firstRow, int count, Span<float> destination) => decoder.ReadRows(firstRow, count, destination);

        protected override bool TryDotRows(int firstRow, int count, ReadOnlySpan<float> x, Span<float> y) => decoder.TryDotRows(firstRow, count, x, y);

        protected override bool TryDotRowsMany(int firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride) =>
            decoder.TryDotRowsMany(firstRow, count, vectors, x, y, yStride);

        protected override bool StoredRows(int firstRow, int count, out nint address, out nint length) =>
            decoder.TryStoredRows(firstRow, count, out address, out length);

        protected override unsafe ushort* Bf16Rows => (ushort*)decoder.Bf16Address;

        protected override bool HasDotRowsMany => decoder.HasDotRowsMany;

        protected override int MaxDotVectors => decoder.MaxDotVectors;

        protected override IFactoredRows? Factored { get; } = decoder is IFactoredDecoder f ? new FactoredRows(f) : null;
    }

    private sealed class FactoredRows(IFactoredDecoder decoder) : IFactoredRows
    {
        public int Rank => decoder.Rank;

        public void PrepareWindow(ReadOnlySpan<float> x, int tokens, Span<float> transformed, Span<float> lowRank) =>
            decoder.PrepareWindow(x, tokens, transformed, lowRank);

        public void ReadBaseRows(int firstRow, int count, Span<float> destination) => decoder.ReadBaseRows(firstRow, count, destination);

        public void AddLowRank(int firstRow, int count, ReadOnlySpan<float> lowRank, int tokens, Span<float> y, int yStride) =>
            decoder.AddLowRank(firstRow, count, lowRank, tokens, y, yStride);
    }
}
