using CsCheck;
using System.Text.Json;
using Nanoscale.Pipeline.Jinja;
using Nanoscale.Tests.Architecture;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>
/// Nanoscale's Jinja subset against Python's Jinja2 configured as transformers' <c>apply_chat_template</c> configures
/// it: <c>ChatTemplates/golden.json</c> holds Jinja2's output (<c>tools/chat_template_reference.py</c>) for the real
/// templates of Llama-3 and Qwen2.5 (read from ../shared) and five written for these tests (two after the constructs of
/// published templates: recursive macros with keyword arguments, loop filters, namespaces, scoping), over conversations with
/// system prompts, tool turns, reasoning, Unicode, quotes and escapes, with and without tools.
/// </summary>
public class JinjaTemplateTests
{
    private static readonly DateTime Clock = new(2026, 12, 5, 9, 30, 0);

    private static string Folder => Path.Combine(ArchitectureRules.RepositoryRoot(), "tests", "Nanoscale.Tests", "Serve", "ChatTemplates");

    public static TheoryData<int> Cases()
    {
        var data = new TheoryData<int>();
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "golden.json")));
        for (int k = 0; k < golden.RootElement.GetArrayLength(); k++) data.Add(k);
        return data;
    }

    private static string TemplateText(string name) => name.StartsWith("shared:", StringComparison.Ordinal)
        ? JsonDocument.Parse(File.ReadAllBytes(SharedData.Path("tokenizers", name["shared:".Length..], "tokenizer_config.json")))
            .RootElement.GetProperty("chat_template").GetString()!
        : File.ReadAllText(Path.Combine(Folder, name));

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersAsJinja2Does(int index)
    {
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "golden.json")));
        var c = golden.RootElement[index];
        var template = JinjaTemplate.Parse(TemplateText(c.GetProperty("template").GetString()!));
        var variables = (OrderedDictionary<string, object?>)JinjaValues.FromJson(c.GetProperty("variables"))!;
        string label = $"{c.GetProperty("template")} on {c.GetProperty("conversation")}";
        if (c.TryGetProperty("error", out var error))
        {
            var e = Assert.Throws<JinjaException>(() => template.Render(variables.ToDictionary(), () => Clock));
            Assert.True(e.Raised, label);
            Assert.Equal(error.GetString(), e.Reason);
        }
        else Assert.Equal(c.GetProperty("expected").GetString(), template.Render(variables.ToDictionary(), () => Clock));
    }

    public static TheoryData<int> DifferentialCases()
    {
        var data = new TheoryData<int>();
        using var file = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "differential.json")));
        for (int k = 0; k < file.RootElement.GetProperty("cases").GetArrayLength(); k++) data.Add(k);
        return data;
    }

    /// <summary>Random small templates over strings, numbers, lists, dicts and a conversation, with the filters, tests,
    /// methods, slices and statements templates use (<c>tools/jinja_differential.py</c>): where Jinja2 rendered, the same
    /// text; where it refused (a type error, an undefined attribute, bad syntax), a JinjaException.</summary>
    [Theory]
    [MemberData(nameof(DifferentialCases))]
    public void RandomTemplatesRenderAsJinja2Does(int index)
    {
        using var file = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "differential.json")));
        var variables = ((OrderedDictionary<string, object?>)JinjaValues.FromJson(file.RootElement.GetProperty("variables"))!).ToDictionary();
        var c = file.RootElement.GetProperty("cases")[index];
        var text = c.GetProperty("template").GetString()!;
        if (c.TryGetProperty("expected", out var expected))
            Assert.Equal(expected.GetString(), JinjaTemplate.Parse(text).Render(variables, () => Clock));
        else Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(text).Render(variables, () => Clock));
    }

    private static string Render(string template, object? messages = null) =>
        JinjaTemplate.Parse(template).Render(new Dictionary<string, object?> { ["messages"] = messages }, () => Clock);

    [Theory]
    [InlineData("{% if x %}", "'{% endif %}' expected", 1, 11)]
    [InlineData("a\n{{ x + }}", "unexpected '}}'", 2, 8)]
    [InlineData("{% for x in y %}{% endif %}", "'endif' is not a statement", 1, 20)]
    [InlineData("{{ 'open }}", "a string is not closed", 1, 4)]
    [InlineData("{% include 'other.jinja' %}", "'include' is not a statement", 1, 4)]
    [InlineData("{# never closed", "a comment is not closed", 1, 1)]
    [InlineData("{{ x $ y }}", "unexpected character '$'", 1, 6)]
    public void ParseErrorsNameTheirPlace(string template, string reason, int line, int column)
    {
        var e = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(template));
        Assert.Contains(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
    }

    [Theory]
    [InlineData("{{ messages.x.y }}", "'dict object' has no attribute 'x' (reading '.y')")]
    [InlineData("{{ nothing | tojson }}", "'nothing' is undefined (filter 'tojson')")]
    [InlineData("{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'")]
    [InlineData("{{ 1 // 0 }}", "division by zero")]
    [InlineData("{{ x | nosuchfilter }}", "no filter named 'nosuchfilter'")]
    [InlineData("{% set l = [1] %}{{ l.append(2) }}", "'list object' has no attribute 'append': it cannot be called")]
    [InlineData("{% set y.a = 1 %}", "'y' is not a namespace: only namespace(...) attributes can be set")]
    public void RenderErrorsSayWhatWentWrong(string template, string reason)
    {
        var e = Assert.Throws<JinjaException>(() => Render(template, new OrderedDictionary<string, object?>()));
        Assert.Equal(reason, e.Reason);
        Assert.False(e.Raised);
        Assert.Equal(1, e.Line);
    }

    [Fact]
    public void AHostileTemplateStopsAtItsLimits()
    {
        // Output, loop turns, macro recursion and nesting are all bounded: a template from a model's files cannot
        // hang the server, exhaust its memory or overflow its stack.
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{% for i in range(1000000) %}{{ 'x' * 20 }}{% endfor %}")).Reason);
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}")).Reason);
        Assert.Contains("deep", Assert.Throws<JinjaException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")).Reason);
        Assert.Contains("deep", Assert.Throws<JinjaException>(() => Render("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}")).Reason);
        Assert.Contains("caller", Assert.Throws<JinjaException>(() => Render("{% macro m() %}{{ caller() }}{% endmacro %}{{ m() }}")).Reason);
        Assert.Contains("nests deeper", Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}")).Reason);
        Assert.Contains("nests deeper", Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(string.Concat(Enumerable.Repeat("{% if x %}", 5000)))).Reason);
        Assert.Contains("longer than", Assert.Throws<JinjaException>(() => Render("{{ 'ab' * 100000000 }}")).Reason);
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{{ range(100000000) | length }}")).Reason);
    }

    [Fact]
    public void RaiseExceptionIsMarkedAsTheTemplatesOwnMessage()
    {
        var e = Assert.Throws<JinjaException>(() => Render("{{ raise_exception('Roles must alternate') }}"));
        Assert.True(e.Raised);
        Assert.Equal("Roles must alternate", e.Reason);
    }

    [Theory]
    [InlineData(0.1, "0.1")]
    [InlineData(1.0, "1.0")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(1.5e-5, "1.5e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(123456789012345678.0, "1.2345678901234568e+17")]
    [InlineData(double.NegativeInfinity, "-inf")]
    public void FloatsPrintAsPythonPrintsThem(double value, string text) => Assert.Equal(text, JinjaValues.PythonFloat(value));
}

/// <summary>A chat template comes from a model's files: whatever its text, parsing and rendering end in a result or a
/// <see cref="JinjaException"/>, never another exception, a hang or a crash.</summary>
public class JinjaRobustnessTests
{
    private static readonly string[] Fragments =
    [
        "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "{%+", "\n", " ", "  ", "text", "'s'", "\"d\"", "'\\n'", "'\\u00e9'",
        "for", "endfor", "if", "elif", "else", "endif", "set", "endset", "macro", "endmacro", "raw", "endraw", "break", "continue",
        "generation", "endgeneration", "in", "not", "and", "or", "is", "defined", "none", "true", "x", "m", "ns", "loop", "messages",
        "namespace(a=1)", "range(3)", "range(-2, 5, 2)", "raise_exception('r')", "strftime_now('%d')", "0", "1", "-1", "2.5", "1e3",
        "(", ")", "[", "]", "{", "}", ",", ":", ".", "|", "=", "==", "!=", "<", ">=", "+", "-", "*", "/", "//", "%", "**", "~",
        "trim", "tojson", "length", "join", "default", "items()", "split(',')", "startswith('a')", "[::-1]", "[1:]", "[0]", "[-1]",
        "message.content", "messages[0].role", "loop.index0", "ns.a", "x if y else z", "is string", "is not none", "selectattr('role')",
    ];

    private static readonly string[] Atoms =
    [
        "x", "y", "m", "messages", "messages[0]", "messages[-1].content", "loop", "ns", "none", "true", "0", "-3", "2.5", "'a,b'", "''",
        "[1, 'a', none]", "{'k': [1]}", "range(4)", "namespace(a=1)", "undefined_thing", "message", "1e308", "9223372036854775807",
    ];

    private static readonly string[] Binary = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", "in", "not in", "and", "or"];

    private static readonly string[] Postfix =
    [
        "|trim", "|tojson", "|tojson(indent=2)", "|length", "|join(',')", "|default('d')", "|first", "|last", "|list", "|items", "|reverse",
        "|int", "|float", "|string", "|upper", "|title", "|selectattr('role')", "|map(attribute='role')", "|sort", "|unique", "|abs",
        "|round(1)", "|indent(2)", "|min", "|max", "|sum", "|replace('a', 'b')", ".split(',')", ".strip()", ".startswith('a')",
        ".items()", ".keys()", ".get('k')", ".content", ".role", "[0]", "[-1]", "[1:]", "[::-1]", "[::0]", "['k']", " is string",
        " is not none", " is defined", " is divisibleby(0)", " is eq(1)", "()", "(1, 2)",
    ];

    private static Gen<string> Pick(string[] choices) => Gen.Int[0, choices.Length - 1].Select(k => choices[k]);

    private static Gen<string> Expression(int depth) => depth == 0
        ? Pick(Atoms)
        : Gen.Frequency(
            (3, Pick(Atoms)),
            (2, Gen.Select(Expression(depth - 1), Pick(Binary), Expression(depth - 1), (a, op, b) => $"{a} {op} {b}")),
            (2, Gen.Select(Expression(depth - 1), Pick(Postfix), (a, p) => $"({a}){p}")),
            (1, Expression(depth - 1).Select(a => $"not {a}")),
            (1, Gen.Select(Expression(depth - 1), Expression(depth - 1), Expression(depth - 1), (a, b, c) => $"{a} if {b} else {c}")));

    private static Gen<string> Statement(int depth)
    {
        var e = Expression(2);
        var leaf = Gen.Frequency(
            (3, e.Select(x => $"{{{{ {x} }}}}")),
            (1, e.Select(x => $"{{% set x = {x} %}}")),
            (1, e.Select(x => $"{{% set ns.a = {x} %}}")),
            (1, Gen.Const("text\n")),
            (1, Gen.Const("{% break %}")));
        if (depth == 0) return leaf;
        var body = Statement(depth - 1).Array[0, 3].Select(string.Concat);
        return Gen.Frequency(
            (3, leaf),
            (1, Gen.Select(e, body, body, (c, a, b) => $"{{% if {c} %}}{a}{{% else %}}{b}{{% endif %}}")),
            (1, Gen.Select(e, body, (c, a) => $"{{%- for m in {c} %}}{a}{{{{ loop.index }}}}{{% endfor -%}}")),
            (1, Gen.Select(e, body, (c, a) => $"{{% macro f(p, q=1) %}}{a}{{% endmacro %}}{{{{ f({c}) }}}}")));
    }

    [Fact]
    public void RandomWellFormedTemplatesFailOnlyWithJinjaErrors()
    {
        var messages = new List<object?>
        {
            new OrderedDictionary<string, object?> { ["role"] = "user", ["content"] = "a,b" },
            new OrderedDictionary<string, object?> { ["role"] = "assistant", ["content"] = 3L },
        };
        Statement(3).Array[1, 4].Select(string.Concat).Sample(text =>
        {
            try
            {
                JinjaTemplate.Parse("{% set ns = namespace(a=0) %}" + text)
                    .Render(new Dictionary<string, object?> { ["messages"] = messages, ["x"] = "v", ["y"] = null }, () => new DateTime(2026, 1, 2));
            }
            catch (JinjaException) { }
            catch (Exception e) { throw new Exception($"{e.GetType().Name} on template {text}: {e.Message}", e); }
        }, iter: 5000);
    }

    [Fact]
    public void RandomTemplatesFailOnlyWithJinjaErrors()
    {
        var messages = new List<object?>
        {
            new OrderedDictionary<string, object?> { ["role"] = "user", ["content"] = "a,b" },
            new OrderedDictionary<string, object?> { ["role"] = "assistant", ["content"] = 3L },
        };
        Gen.Int[0, Fragments.Length - 1].Array[1, 40].Sample(picks =>
        {
            var text = string.Join("", picks.Select(p => Fragments[p]));
            try
            {
                var template = JinjaTemplate.Parse(text);
                template.Render(new Dictionary<string, object?> { ["messages"] = messages, ["x"] = "v", ["y"] = null }, () => new DateTime(2026, 1, 2));
            }
            catch (JinjaException) { }
            catch (Exception e) { throw new Exception($"{e.GetType().Name} on template {text}: {e.Message}", e); }
        }, iter: 20000);
    }
}
