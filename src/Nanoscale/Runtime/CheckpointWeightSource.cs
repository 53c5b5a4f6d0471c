using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>Reads uncompressed tensors of any float dtype from a checkpoint and holds them as float32.</summary>
internal sealed class CheckpointWeightSource(ICheckpoint checkpoint) : IWeightSource
{
    public ICheckpoint Checkpoint { get; } = checkpoint ?? throw new ArgumentNullException(nameof(checkpoint));

    public bool Contains(string name) => Checkpoint.Find(name) is not null;

    public IReadOnlyList<long> Shape(string name) => Get(name).Shape;

    public ILinearWeight Linear(string name)
    {
        TensorInfo tensor = Get(name);
        if (tensor.Shape.Length != 2 || tensor.Shape[0] > int.MaxValue || tensor.Shape[1] > int.MaxValue || tensor.ElementCount > Array.MaxLength)
            throw new CheckpointFormatException(tensor.FilePath, name, tensor.FileOffset, $"expected a 2-D weight of at most {Array.MaxLength} elements, found {tensor.ShapeText}");
        return new DenseLinearWeight(Read(tensor), (int)tensor.Shape[0], (int)tensor.Shape[1]);
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
