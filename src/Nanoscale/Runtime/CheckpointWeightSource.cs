using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// Uncompressed tensors of a checkpoint: 2-D weights stay in the mapped file in their stored dtype
/// (<see cref="MappedLinearWeight"/>: F32, BF16 or F16, widened inside the products), vectors (norms, biases) are read
/// as float32. Disposing releases the mappings.
/// </summary>
internal sealed class CheckpointWeightSource(ICheckpoint checkpoint) : IWeightSource, IDisposable
{
    private readonly List<IDisposable> _mapped = [];

    public ICheckpoint Checkpoint { get; } = checkpoint ?? throw new ArgumentNullException(nameof(checkpoint));

    public bool Contains(string name) => Checkpoint.Find(name) is not null;

    public IReadOnlyList<long> Shape(string name) => Get(name).Shape;

    public ILinearWeight Linear(string name)
    {
        TensorInfo tensor = Get(name);
        if (tensor.Shape.Length != 2 || tensor.Shape[0] > int.MaxValue || tensor.Shape[1] > int.MaxValue || tensor.ElementCount > Array.MaxLength)
            throw new CheckpointFormatException(tensor.FilePath, name, tensor.FileOffset, $"expected a 2-D weight of at most {Array.MaxLength} elements, found {tensor.ShapeText}");
        if (tensor.DType is not (DType.F32 or DType.BF16 or DType.F16))
            return new DenseLinearWeight(Read(tensor), (int)tensor.Shape[0], (int)tensor.Shape[1]);
        var view = Checkpoint.Map(tensor);
        var weight = MappedLinearWeight.Over(view, (int)tensor.Shape[0], (int)tensor.Shape[1]);
        lock (_mapped) _mapped.Add((IDisposable)weight);
        return weight;
    }

    public void Dispose()
    {
        lock (_mapped)
        {
            foreach (var m in _mapped) m.Dispose();
            _mapped.Clear();
        }
    }

    public float[] Vector(string name)
    {
        TensorInfo tensor = Get(name);
        if (tensor.Shape.Length != 1)
            throw new CheckpointFormatException(tensor.FilePath, name, tensor.FileOffset, $"expected a 1-D tensor, found {tensor.ShapeText}");
        return Read(tensor);
    }

    private TensorInfo Get(string name) =>
        Checkpoint.Find(name) ?? throw new CheckpointFormatException(Checkpoint.Path, name, null, "tensor not found in the checkpoint");

    private float[] Read(TensorInfo tensor)
    {
        if (!tensor.DType.IsFloat())
            throw new CheckpointFormatException(tensor.FilePath, tensor.Name, tensor.FileOffset, $"expected a floating-point tensor, found {tensor.DType}");
        using TensorView view = Checkpoint.Map(tensor);
        return view.ToFloatArray();
    }
}
