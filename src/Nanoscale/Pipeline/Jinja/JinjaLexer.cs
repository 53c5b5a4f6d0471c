using System.Globalization;
using System.Text;

namespace Nanoscale.Pipeline.Jinja;

internal enum TokenKind { Text, VariableOpen, VariableClose, BlockOpen, BlockClose, Name, String, Integer, Float, Operator, End }

/// <summary>One token and where it starts (offset into the template, after newlines were normalised).</summary>
internal readonly record struct Token(TokenKind Kind, string Value, int Offset, long Integer = 0, double Float = 0);

/// <summary>
/// Splits a template into text and tag tokens the way Jinja does with the settings Hugging Face's
/// <c>apply_chat_template</c> uses: <c>trim_blocks</c> (the first newline after a block or comment tag is dropped) and
/// <c>lstrip_blocks</c> (spaces and tabs before a block or comment tag at the start of a line are dropped), with
/// <c>-</c> / <c>+</c> whitespace control on any tag, <c>{# comments #}</c> and <c>{% raw %}</c>. Newlines
/// (<c>\r\n</c>, <c>\r</c>) become <c>\n</c> first, as Jinja's <c>newline_sequence</c> does, and one newline at
/// the end of the template is dropped.
/// </summary>
internal static class JinjaLexer
{
    public static (string Source, List<Token> Tokens) Tokenize(string template)
    {
        var source = template.Replace("\r\n", "\n").Replace('\r', '\n');
        // One newline at the very end is dropped (Jinja's keep_trailing_newline=False, which transformers keeps).
        if (source.EndsWith('\n')) source = source[..^1];
        var tokens = new List<Token>();
        int pos = 0;
        bool stripNext = false; // the previous tag ended with '-': drop the whitespace that follows it
        while (pos < source.Length)
        {
            int open = FindOpen(source, pos);
            int textEnd = open < 0 ? source.Length : open;
            int textStart = pos;
            if (stripNext) while (textStart < textEnd && char.IsWhiteSpace(source[textStart])) textStart++;
            stripNext = false;
            if (open < 0)
            {
                AddText(tokens, source, textStart, textEnd);
                break;
            }
            char kind = source[open + 1];
            char modifier = open + 2 < source.Length ? source[open + 2] : '\0';
            int contentStart = open + 2 + (modifier is '-' or '+' ? 1 : 0);
            int keepEnd = textEnd;
            if (modifier == '-')
                while (keepEnd > textStart && char.IsWhiteSpace(source[keepEnd - 1])) keepEnd--;
            else if (kind is '%' or '#' && modifier != '+')
            {
                // lstrip_blocks: only whitespace between the line's start and the tag.
                int newline = -1;
                for (int k = textEnd - 1; k >= textStart && newline < 0; k--)
                    if (source[k] == '\n') newline = k;
                int from = newline >= 0 ? newline + 1 : textStart;
                bool atLineStart = newline >= 0 || textStart == 0 || source[textStart - 1] == '\n';
                if (atLineStart && IsBlank(source, from, textEnd)) keepEnd = from;
            }
            AddText(tokens, source, textStart, keepEnd);
            if (kind == '#')
            {
                int close = source.IndexOf("#}", contentStart, StringComparison.Ordinal);
                if (close < 0) throw Error(source, open, "a comment is not closed ('#}' missing)");
                pos = AfterClose(source, close, '#', ref stripNext);
                continue;
            }
            var (closeKind, opener) = kind == '{' ? (TokenKind.VariableClose, TokenKind.VariableOpen) : (TokenKind.BlockClose, TokenKind.BlockOpen);
            char closer = kind == '{' ? '}' : '%';
            // raw: the text up to {% endraw %} as it is.
            if (kind == '%' && TryRaw(source, contentStart, out int rawBodyStart, out int rawCloseAt))
            {
                int bodyEndTag = FindEndRaw(source, rawBodyStart, out int endTagStart, out bool endStripsBefore);
                if (bodyEndTag < 0) throw Error(source, open, "'raw' is not closed ('{% endraw %}' missing)");
                int bodyStart = rawCloseAt;
                int bodyEnd = endTagStart;
                if (endStripsBefore) while (bodyEnd > bodyStart && char.IsWhiteSpace(source[bodyEnd - 1])) bodyEnd--;
                AddText(tokens, source, bodyStart, bodyEnd);
                pos = AfterClose(source, bodyEndTag, '%', ref stripNext);
                continue;
            }
            tokens.Add(new Token(opener, "", open));
            pos = TokenizeInside(source, contentStart, closer, tokens);
            tokens.Add(new Token(closeKind, "", pos));
            pos = AfterClose(source, pos, closer, ref stripNext);
        }
        tokens.Add(new Token(TokenKind.End, "", source.Length));
        return (source, tokens);
    }

    /// <summary>The line and column (from 1) of <paramref name="offset"/>.</summary>
    public static (int Line, int Column) Locate(string source, int offset)
    {
        offset = Math.Clamp(offset, 0, source.Length);
        int line = 1, lineStart = 0;
        for (int i = 0; i < offset; i++)
            if (source[i] == '\n') (line, lineStart) = (line + 1, i + 1);
        return (line, offset - lineStart + 1);
    }

    public static JinjaException Error(string source, int offset, string message)
    {
        var (line, column) = Locate(source, offset);
        return new JinjaException(message, line, column);
    }

    private static int FindOpen(string source, int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static bool IsBlank(string s, int from, int to)
    {
        for (int i = from; i < to; i++)
            if (s[i] is not (' ' or '\t' or '\f' or '\v')) return false;
        return true;
    }

    private static void AddText(List<Token> tokens, string source, int start, int end)
    {
        if (end > start) tokens.Add(new Token(TokenKind.Text, source[start..end], start));
    }

    /// <summary>Past a closing tag at <paramref name="close"/> (its <c>-</c> or <c>+</c> included), with trim_blocks.</summary>
    private static int AfterClose(string source, int close, char kind, ref bool stripNext)
    {
        // close points at the closing pair, or at the '-'/'+' before it.
        char modifier = source[close];
        int after = close + (modifier is '-' or '+' ? 3 : 2);
        if (modifier == '-') stripNext = true;
        else if (modifier != '+' && kind is '%' or '#' && after < source.Length && source[after] == '\n') after++;
        return after;
    }

    private static bool TryRaw(string source, int at, out int bodyStart, out int closeAt)
    {
        bodyStart = closeAt = 0;
        int i = at;
        while (i < source.Length && char.IsWhiteSpace(source[i])) i++;
        if (string.CompareOrdinal(source, i, "raw", 0, 3) != 0) return false;
        i += 3;
        while (i < source.Length && char.IsWhiteSpace(source[i])) i++;
        bool strip = i < source.Length && source[i] == '-';
        if (strip || (i < source.Length && source[i] == '+')) i++;
        if (i + 1 >= source.Length || source[i] != '%' || source[i + 1] != '}') return false;
        closeAt = i + 2;
        if (strip) while (closeAt < source.Length && char.IsWhiteSpace(source[closeAt])) closeAt++;
        else if (closeAt < source.Length && source[closeAt] == '\n') closeAt++;
        bodyStart = closeAt;
        return true;
    }

    /// <summary>The closing <c>%}</c> (or its modifier) of the next <c>{% endraw %}</c>, and where that tag starts.</summary>
    private static int FindEndRaw(string source, int from, out int tagStart, out bool stripsBefore)
    {
        for (int i = source.IndexOf("{%", from, StringComparison.Ordinal); i >= 0; i = source.IndexOf("{%", i + 2, StringComparison.Ordinal))
        {
            int j = i + 2;
            stripsBefore = j < source.Length && source[j] == '-';
            if (j < source.Length && source[j] is '-' or '+') j++;
            while (j < source.Length && char.IsWhiteSpace(source[j])) j++;
            if (string.CompareOrdinal(source, j, "endraw", 0, 6) != 0) continue;
            j += 6;
            while (j < source.Length && char.IsWhiteSpace(source[j])) j++;
            if (j + 1 < source.Length && source[j] is '-' or '+' && source[j + 1] == '%' && j + 2 < source.Length && source[j + 2] == '}'
                || j + 1 < source.Length && source[j] == '%' && source[j + 1] == '}')
            {
                tagStart = i;
                return j;
            }
        }
        tagStart = 0;
        stripsBefore = false;
        return -1;
    }

    /// <summary>The tokens of an expression or statement up to the closing <paramref name="closer"/><c>}</c>; returns
    /// the closing pair's offset (at its <c>-</c>/<c>+</c> when it has one).</summary>
    private static int TokenizeInside(string s, int i, char closer, List<Token> tokens)
    {
        int depth = 0; // brackets: a '}' inside a dict literal does not close a variable tag
        while (true)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
            if (i >= s.Length) throw Error(s, i, closer == '}' ? "'}}' expected" : "'%}' expected");
            char c = s[i];
            if (depth == 0)
            {
                if (c == closer && i + 1 < s.Length && s[i + 1] == '}') return i;
                if (c is '-' or '+' && i + 2 < s.Length && s[i + 1] == closer && s[i + 2] == '}') return i;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int start = i;
                while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                tokens.Add(new Token(TokenKind.Name, s[start..i], start));
            }
            else if (char.IsAsciiDigit(c))
                i = Number(s, i, tokens);
            else if (c is '\'' or '"')
                i = StringLiteral(s, i, tokens);
            else
            {
                int start = i;
                string op = i + 1 < s.Length ? s.Substring(i, 2) : "";
                if (op is "//" or "**" or "==" or "!=" or "<=" or ">=") i += 2;
                else if ("+-*/%~<>=()[]{},.:|!".Contains(c)) { op = c.ToString(); i++; }
                else throw Error(s, i, $"unexpected character '{c}'");
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
                tokens.Add(new Token(TokenKind.Operator, op, start));
            }
        }
    }

    private static int Number(string s, int i, List<Token> tokens)
    {
        int start = i;
        while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '_')) i++;
        bool isFloat = false;
        if (i + 1 < s.Length && s[i] == '.' && char.IsAsciiDigit(s[i + 1]))
        {
            isFloat = true;
            i++;
            while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '_')) i++;
        }
        if (i < s.Length && s[i] is 'e' or 'E')
        {
            int j = i + 1;
            if (j < s.Length && s[j] is '+' or '-') j++;
            if (j < s.Length && char.IsAsciiDigit(s[j]))
            {
                isFloat = true;
                i = j;
                while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
            }
        }
        var text = s[start..i].Replace("_", "");
        if (isFloat)
            tokens.Add(new Token(TokenKind.Float, text, start, Float: double.Parse(text, CultureInfo.InvariantCulture)));
        else if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
            tokens.Add(new Token(TokenKind.Integer, text, start, Integer: value));
        else throw Error(s, start, $"integer {text} is too large");
        return i;
    }

    /// <summary>A quoted string with Python's escapes (<c>\n \t \r \\ \' \" \uXXXX \xXX</c>; others kept as written).</summary>
    private static int StringLiteral(string s, int i, List<Token> tokens)
    {
        char quote = s[i];
        int start = i++;
        var text = new StringBuilder();
        while (true)
        {
            if (i >= s.Length) throw Error(s, start, "a string is not closed");
            char c = s[i++];
            if (c == quote) break;
            if (c != '\\') { text.Append(c); continue; }
            if (i >= s.Length) throw Error(s, start, "a string is not closed");
            char e = s[i++];
            switch (e)
            {
                case 'n': text.Append('\n'); break;
                case 't': text.Append('\t'); break;
                case 'r': text.Append('\r'); break;
                case '0': text.Append('\0'); break;
                case 'b': text.Append('\b'); break;
                case 'f': text.Append('\f'); break;
                case 'v': text.Append('\v'); break;
                case 'a': text.Append('\a'); break;
                case '\\' or '\'' or '"': text.Append(e); break;
                case '\n': break;
                case 'x' or 'u' or 'U':
                    int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (i + digits > s.Length || !int.TryParse(s.AsSpan(i, digits), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code)
                        || code > 0x10FFFF)
                        throw Error(s, i - 2, $"bad \\{e} escape");
                    text.Append(char.ConvertFromUtf32(code));
                    i += digits;
                    break;
                default: text.Append('\\').Append(e); break;
            }
        }
        tokens.Add(new Token(TokenKind.String, text.ToString(), start));
        return i;
    }
}
