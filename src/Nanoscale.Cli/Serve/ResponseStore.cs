using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Serve;

/// <summary>
/// The Responses API's stored responses, so a request can go on from one by <c>previous_response_id</c>: each response's
/// conversation (its input after the instructions, the conversation it went on from, and its reply), in memory, the
/// <see cref="Capacity"/> most recently used, while the server runs. Instructions are not carried over (as OpenAI's are
/// not). Thread-safe.
/// </summary>
internal sealed class ResponseStore(int capacity)
{
    private readonly LinkedList<(string Id, IReadOnlyList<ChatMessage> Conversation)> _order = [];
    private readonly Dictionary<string, LinkedListNode<(string Id, IReadOnlyList<ChatMessage> Conversation)>> _byId = [];

    public int Capacity { get; } = capacity;

    /// <summary>The conversation of response <paramref name="id"/>, which becomes the most recently used.</summary>
    public bool TryGet(string id, out IReadOnlyList<ChatMessage> conversation)
    {
        lock (_order)
        {
            if (!_byId.TryGetValue(id, out var node))
            {
                conversation = [];
                return false;
            }
            _order.Remove(node);
            _order.AddFirst(node);
            conversation = node.Value.Conversation;
            return true;
        }
    }

    /// <summary>Keeps response <paramref name="id"/>'s conversation, dropping the least recently used beyond the capacity.</summary>
    public void Put(string id, IReadOnlyList<ChatMessage> conversation)
    {
        lock (_order)
        {
            if (_byId.Remove(id, out var old)) _order.Remove(old);
            _byId[id] = _order.AddFirst((id, conversation));
            while (_order.Count > Capacity)
            {
                _byId.Remove(_order.Last!.Value.Id);
                _order.RemoveLast();
            }
        }
    }
}
