using Mono.Cecil;
using Mono.Cecil.Cil;

namespace Nanoscale.Tests.Architecture;

/// <summary>One use of a type by another, found in an assembly's metadata or IL.</summary>
/// <param name="From">Full name of the type (or the outermost type declaring the member) that uses.</param>
/// <param name="To">Full name of the type used.</param>
/// <param name="Where">Where the use was found: a signature, a field, a method body.</param>
internal sealed record TypeUse(string From, string FromNamespace, string To, string ToNamespace, string Where);

/// <summary>
/// Every type reference inside one assembly from one of its own types to another, read with Mono.Cecil: base types,
/// interfaces, attributes, fields, properties, method signatures and generic constraints, and every operand and local
/// of every method body, so a use hidden in a lambda or a local variable counts as much as one in a signature.
/// Compiler-generated nested types (closures, iterators, state machines) count as their outermost declaring type.
/// </summary>
internal static class DependencyScanner
{
    public static IReadOnlyList<TypeUse> Scan(string assemblyPath, Func<string, bool> isOwnNamespace)
    {
        using var assembly = AssemblyDefinition.ReadAssembly(assemblyPath);
        var uses = new List<TypeUse>();
        foreach (var type in assembly.MainModule.Types)
            Visit(type, type, isOwnNamespace, uses);
        return uses;
    }

    private static void Visit(TypeDefinition outer, TypeDefinition type, Func<string, bool> own, List<TypeUse> uses)
    {
        if (!own(outer.Namespace)) return;
        void Use(TypeReference? reference, string where) => Collect(outer, reference, where, own, uses);

        Use(type.BaseType, "base type");
        foreach (var i in type.Interfaces) Use(i.InterfaceType, "interface");
        Attributes(type, Use);
        foreach (var p in type.GenericParameters)
            foreach (var c in p.Constraints) Use(c.ConstraintType, "generic constraint");
        foreach (var field in type.Fields)
        {
            Use(field.FieldType, $"field {field.Name}");
            Attributes(field, Use);
        }
        foreach (var property in type.Properties)
        {
            Use(property.PropertyType, $"property {property.Name}");
            Attributes(property, Use);
        }
        foreach (var e in type.Events) Use(e.EventType, $"event {e.Name}");
        foreach (var method in type.Methods)
        {
            string where = $"method {type.Name}.{method.Name}";
            Use(method.ReturnType, where);
            foreach (var p in method.Parameters) Use(p.ParameterType, where);
            foreach (var g in method.GenericParameters)
                foreach (var c in g.Constraints) Use(c.ConstraintType, where);
            Attributes(method, Use);
            if (!method.HasBody) continue;
            foreach (var local in method.Body.Variables) Use(local.VariableType, where);
            foreach (var handler in method.Body.ExceptionHandlers) Use(handler.CatchType, where);
            foreach (Instruction instruction in method.Body.Instructions)
            {
                switch (instruction.Operand)
                {
                    case TypeReference t:
                        Use(t, where);
                        break;
                    case MethodReference m:
                        Use(m.DeclaringType, where);
                        Use(m.ReturnType, where);
                        foreach (var p in m.Parameters) Use(p.ParameterType, where);
                        if (m is GenericInstanceMethod gm)
                            foreach (var a in gm.GenericArguments) Use(a, where);
                        break;
                    case FieldReference f:
                        Use(f.DeclaringType, where);
                        Use(f.FieldType, where);
                        break;
                }
            }
        }
        foreach (var nested in type.NestedTypes)
            Visit(outer, nested, own, uses);
    }

    private static void Attributes(ICustomAttributeProvider provider, Action<TypeReference?, string> use)
    {
        foreach (var a in provider.CustomAttributes) use(a.AttributeType, "attribute");
    }

    private static void Collect(TypeDefinition from, TypeReference? reference, string where, Func<string, bool> own, List<TypeUse> uses)
    {
        switch (reference)
        {
            case null:
            case GenericParameter:
                return;
            case GenericInstanceType generic:
                Collect(from, generic.ElementType, where, own, uses);
                foreach (var a in generic.GenericArguments) Collect(from, a, where, own, uses);
                return;
            case TypeSpecification spec: // arrays, by-ref, pointers, modifiers
                Collect(from, spec.ElementType, where, own, uses);
                return;
        }
        var outer = reference!;
        while (outer.DeclaringType is not null) outer = outer.DeclaringType;
        if (!own(outer.Namespace) || outer.FullName == from.FullName) return;
        uses.Add(new TypeUse(from.FullName, from.Namespace, outer.FullName, outer.Namespace, where));
    }
}
