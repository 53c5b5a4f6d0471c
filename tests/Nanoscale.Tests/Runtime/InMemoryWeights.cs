using Nanoscale.IO;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>An <see cref="IWeightSource"/> over float arrays, for models edited in tests (permuted, with biases).</summary>
internal sealed class InMemoryWeights : IWeightSource
{
    public Dictionary<string, (float[] Data, long[] Shape)> Tensors { get; } = [];

    public static InMemoryWeights From(ICheckpoint checkpoint)
    {
        var weights = new InMemoryWeights();
        foreach (TensorInfo tensor in checkpoint.Tensors)
        {
            using TensorView view = checkpoint.Map(tensor);
            weights.Tensors[tensor.Name] = (view.ToFloatArray(), tensor.Shape);
        }
        return weights;
    }

    public float[]? TryRead(string name) => Tensors.TryGetValue(name, out var t) ? t.Data : null;

    public bool Contains(string name) => Tensors.ContainsKey(name);

    public IReadOnlyList<long> Shape(string name) => Tensors[name].Shape;

    public ILinearWeight Linear(string name) =>
        new DenseLinearWeight(Tensors[name].Data, (int)Tensors[name].Shape[0], (int)Tensors[name].Shape[1]);

    public float[] Vector(string name) => Tensors[name].Data;
}
