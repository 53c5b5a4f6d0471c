using System.Globalization;
using System.Text;

namespace Nanoscale.Runtime;

internal sealed partial class Llama2cTokenizer
{
    /// <inheritdoc />
    public int[] Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var ids = new List<int>(utf8.Length + 2);
        var mergeable = new List<bool>(utf8.Length + 2);
        if (text.Length > 0 && SpaceId >= 0)
        {
            // llama2.c adds the dummy prefix as its own token (looked up as " "); it merges like any other piece.
            ids.Add(SpaceId);
            mergeable.Add(true);
        }

        Span<char> key = stackalloc char[4];
        for (int i = 0; i < utf8.Length;)
        {
            int length = Utf8SequenceLength(utf8[i]);
            if (i + length > utf8.Length) length = utf8.Length - i; // cannot happen for UTF-8 from a .NET string
            for (int j = 0; j < length; j++) key[j] = (char)utf8[i + j];
            if (_lookup.TryGetValue(key[..length], out int id))
            {
                ids.Add(id);
                mergeable.Add(true);
            }
            else
            {
                for (int j = 0; j < length; j++)
                {
                    ids.Add(_hasByteTokens ? utf8[i + j] + ByteFallbackOffset : UnknownId);
                    mergeable.Add(false);
                }
            }
            i += length;
        }

        int[] merged = MergePairs(ids, mergeable);
        if (!addBos) return merged;
        var result = new int[merged.Length + 1];
        result[0] = Bos;
        merged.CopyTo(result, 1);
        return result;
    }

    /// <summary>
    /// Repeatedly merges the best-scoring adjacent pair (leftmost on ties), as llama2.c's rescanning loop does, but
    /// in O(n log n): a doubly linked list of symbols and a heap of candidate pairs, stale candidates skipped when popped.
    /// A merge keeps the left node, so node indices keep text order and "leftmost" is "smallest left index".
    /// </summary>
    private int[] MergePairs(List<int> initial, List<bool> initialMergeable)
    {
        int n = initial.Count;
        if (n < 2) return [.. initial];
        int[] ids = [.. initial];
        bool[] canMerge = [.. initialMergeable];
        var next = new int[n];
        var prev = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1; prev[i] = i - 1; alive[i] = true; }

        var heap = new PriorityQueue<(int Left, int Right, int LeftId, int RightId, int MergedId), (float Score, int Left)>(
            n, Comparer<(float Score, int Left)>.Create(static (a, b) =>
                a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        var buffer = new char[2 * MaxTokenLength];

        void Offer(int left, int right)
        {
            if (right >= n || !canMerge[left] || !canMerge[right]) return;
            byte[] a = _pieces[ids[left]], b = _pieces[ids[right]];
            for (int k = 0; k < a.Length; k++) buffer[k] = (char)a[k];
            for (int k = 0; k < b.Length; k++) buffer[a.Length + k] = (char)b[k];
            if (_lookup.TryGetValue(buffer.AsSpan(0, a.Length + b.Length), out int mergedId))
                heap.Enqueue((left, right, ids[left], ids[right], mergedId), (_scores[mergedId], left));
        }

        for (int i = 0; i + 1 < n; i++) Offer(i, i + 1);
        while (heap.TryDequeue(out var c, out _))
        {
            if (!alive[c.Left] || !alive[c.Right] || next[c.Left] != c.Right || ids[c.Left] != c.LeftId || ids[c.Right] != c.RightId)
                continue; // stale: one side has merged since this candidate was offered
            ids[c.Left] = c.MergedId;
            alive[c.Right] = false;
            next[c.Left] = next[c.Right];
            if (next[c.Right] < n) prev[next[c.Right]] = c.Left;
            if (prev[c.Left] >= 0) Offer(prev[c.Left], c.Left);
            Offer(c.Left, next[c.Left]);
        }

        var result = new List<int>(n);
        for (int i = 0; i < n; i = next[i]) result.Add(ids[i]);
        return [.. result];
    }

    private static int Utf8SequenceLength(byte lead) =>
        lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;

    /// <inheritdoc />
    /// <remarks>As llama2.c: the piece right after BOS loses its leading space, and "&lt;0xXX&gt;" pieces are raw bytes.</remarks>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 4);
        int previous = -1;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_pieces.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the vocabulary of {_pieces.Length}");
            if (id is Bos or Eos)
            {
                previous = id;
                continue;
            }
            ReadOnlySpan<byte> piece = _pieces[id];
            if (TryParseByteToken(piece, out byte b))
                bytes.Add(b);
            else
            {
                if (previous == Bos && piece.Length > 0 && piece[0] == (byte)' ') piece = piece[1..];
                foreach (byte x in piece) bytes.Add(x);
            }
            previous = id;
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }

    private static bool TryParseByteToken(ReadOnlySpan<byte> piece, out byte value)
    {
        value = 0;
        if (piece.Length != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>') return false;
        Span<char> hex = [(char)piece[3], (char)piece[4]];
        return byte.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }
}
